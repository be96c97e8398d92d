# Sourced by train.sh and side_by_side.sh (PACK set): installs the pack's wheels (MONAI and diffusers, which the lent
# machine lacks) into /tmp/site and puts that on PYTHONPATH, once: the runs that side_by_side.sh starts inherit
# WHEELS_SITE and do not install into one folder at the same time.
if [ -z "${WHEELS_SITE:-}" ] && compgen -G "$PACK/wheels/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        "$PACK"/wheels/*.whl || exit 1
    export WHEELS_SITE=/tmp/site
    export PYTHONPATH="$WHEELS_SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
