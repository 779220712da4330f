#!/usr/bin/env bash
# Rebuild the shipped SynthCell backbones: three pretraining seeds per source (HPA-like,
# OpenCell-like, photographs) and the domain-gap series (pretraining at domain shifts 0.33, 0.67,
# 1.0; shift 0 is synth_opencell). Each run's teacher is exported into src/xferlab/backbones/shipped/
# with its manifest entry (recipe, curves, data fingerprint, sha256). `make pretrain` runs it;
# ONLY="<name> ..." rebuilds those (e.g. ONLY=synth_hpa_s1). About 10 min per backbone on one core
# (two chains with ONLY lists and OMP_NUM_THREADS=1 use two cores best).
set -euo pipefail
PY=${PY:-.venv/bin/python}
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} WANDB_MODE=${WANDB_MODE:-offline}

run() {  # name, then the pretraining overrides
  local name=$1; shift
  if [[ -n "${ONLY:-}" && " $ONLY " != *" $name "* ]]; then return; fi
  local args="$* name=$name"
  echo "== $name: python -m xferlab.pretrain $args"
  $PY -m xferlab.pretrain $args resume=false
  $PY -m xferlab.ssl.export "$name" "outputs/pretrain/$name" --command "python -m xferlab.pretrain $args"
}

SEEDS=${SEEDS:-"0 1 2"}
for s in $SEEDS; do
  run synth_opencell_s$s dataset=synthcell_pretrain backbone=random seed=$s backbone.init_seed=$s
  run synth_photos_s$s dataset=photos backbone=random_rgb seed=$s backbone.init_seed=$s
  run synth_hpa_s$s dataset=synthcell_hpa backbone=random_hpa seed=$s backbone.init_seed=$s
  if [[ $s == 0 ]]; then
    for shift in 0.33 0.67 1.0; do
      tag=$(python3 -c "print(round($shift * 100))")
      run synth_shift${tag}_s$s dataset=synthcell_pretrain dataset.domain_shift=$shift backbone=random seed=$s backbone.init_seed=$s
    done
  fi
done
