#!/usr/bin/env bash
# Gym-muRTS for `proximal train --preset microrts`, into the active Python environment.
# gym-microrts 0.4.3 (the newest on PyPI) declares gym<0.19, which no longer builds: it is installed without its
# dependencies, next to the ones it needs at run time. Its np.int (removed in numpy 2) is shimmed by
# proximal/envs/microrts.py. The games run in Java (8 or newer).
# --if-java: where no Java is found, say so and succeed (the test command uses it: the Gym-muRTS tests then skip).
set -euo pipefail
if ! command -v java >/dev/null 2>&1 && [ -z "${JAVA_HOME:-}" ]; then
    echo "Gym-muRTS needs Java 8 or newer (e.g. apt-get install openjdk-17-jre-headless); none found" >&2
    [ "${1:-}" = "--if-java" ] && { echo "not installing Gym-muRTS; its tests will be skipped" >&2; exit 0; }
    exit 1
fi
python -m pip install --no-deps "gym-microrts==0.4.3"
python -m pip install "gym==0.26.2" "JPype1<2" "Pillow"
python -c "import numpy as np; np.int = int; import gym_microrts.envs.vec_env; print('gym-microrts installed')"
