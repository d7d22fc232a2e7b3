# Sourced from the repository root on a machine without network access: installs the
# pure-Python wheels brought along in ./.whl (made by train/gpu/wheels.sh) into /tmp/site
# and puts that on PYTHONPATH; returns 1 if pip fails. Nothing happens without them.
# PY: the interpreter (default python3).
if compgen -G ".whl/*.whl" >/dev/null; then
  "${PY:-python3}" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || return 1
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
