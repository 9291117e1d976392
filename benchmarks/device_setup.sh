# Sourced by the GPU-machine scripts (imagen_gan_device.sh, imagen_cfg_gan_device.sh,
# dalle_gan_device.sh, continue_device.sh): the
# clock (`left M`: minutes of $MINUTES left after keeping M), the carried wheels (${WHL:-.whl},
# installed to /tmp/site without deps), the core + imagen + gan plugins in editable mode, and
# MiniLM unpacked from ${MINILM:-.minilm16} (benchmarks/minilm_travel.py) as T2I_MINILM_PATH.
start=$(date +%s)
MINUTES=${MINUTES:-9.3}
: "${OUT:?set OUT}"
left() { python3 -c "print(round($MINUTES - ($(date +%s) - $start) / 60 - $1, 2))"; }
export PYTHONUNBUFFERED=1 TQDM_DISABLE=1 T2I_KERNELS=ref
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "${WHL:-.whl}"/*.whl
export PYTHONPATH=/tmp/site
python3 -m pip install -q --no-deps --no-build-isolation -e . -e plugins/t2i_imagen -e plugins/t2i_gan \
  > /tmp/install.log 2>&1 || { tail /tmp/install.log; exit 1; }
python3 benchmarks/minilm_travel.py unpack "${MINILM:-.minilm16}" /tmp/minilm > /tmp/minilm.log 2>&1
export T2I_MINILM_PATH=/tmp/minilm

# After a `t2i train gan` run in RUN: its model folder to $OUT/gan, its curves to $R, then
# `t2i eval gan-shapes` on the GPU with what is left of the clock less KEEP minutes.
gan_finish() {  # RUN KEEP
  local run=$1
  mkdir -p "$OUT/gan"
  cp "$run"/model/* "$OUT/gan/"
  cp "$run"/curves.json "$R/gan.curves.json"; cp "$run"/curves.png "$R/gan.curves.png"
  OMP_NUM_THREADS=4 timeout "$(python3 -c "print(max(30, int(($(left "$2")) * 60)))")" \
    t2i eval gan-shapes --checkpoint "$run/model" --device cuda --prompts 64 --seeds 4 \
    --out /tmp/gan-eval > "$R/gan.eval.log" 2>&1
  cp /tmp/gan-eval/report.json "$R/gan.eval.json" 2>/dev/null
}
