"""Write docs/details.md from the detail registry (proximal/details.py); tests/test_docs.py fails until the page
is rewritten after a change to the registry.

    python scripts/render_details.py
"""

import argparse
from pathlib import Path

from proximal.details import markdown

PAGE = Path(__file__).resolve().parents[1] / "docs" / "details.md"

if __name__ == "__main__":
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    PAGE.write_text(markdown())
    print(f"wrote {PAGE}")
