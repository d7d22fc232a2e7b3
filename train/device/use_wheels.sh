# Sourced on a device machine from the repository root: installs the pure-Python wheels
# carried in ./.whl (made here by train/device/wheels.sh) into /tmp/site and puts that on
# PYTHONPATH; returns 1 if pip fails. Nothing happens without them. PY: the interpreter
# (default python3).
if compgen -G ".whl/*.whl" >/dev/null; then
  "${PY:-python3}" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || return 1
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
