#!/bin/sh
# The programs benchmarks/firmware/run.py and host_run.py measure: ResNet-20 (../shared) at
# batch 1, exported for the STM32H743 and the EcoTTA pair also, as <name>_f746, for the
# STM32F746 (planned for its banks; exit 3 there means it does not fit, which run.py measures).
# EcoTTA's with --no-warmup: sizes and memory do not depend on the warm-up (weights only).
#   sh benchmarks/firmware/programs.sh [DIR]   # default build/mcu/programs; ~15 min on 2 cores
set -e
cd "$(dirname "$0")/../.."
D=${1:-build/mcu/programs}
rm -rf "$D" && mkdir -p "$D"
C="--model resnet20 --checkpoint ../shared/models/resnet20_cifar10jpeg.pt --batch 1"
INT8='{"frozen_bn":"batch","frozen_weights":"int8"}'
FP32='{"frozen_bn":"batch","frozen_weights":"fp32"}'
h743() {  # NAME FLAGS... (exit 3, "does not fit", is a result too)
  name=$1
  shift
  # shellcheck disable=SC2086
  python -m edgeadapt.cli export $C "$@" --device stm32h743 --out "$D/$name" \
    --json "$D/$name/$name.json" || [ $? -eq 3 ]
}
f746() {  # NAME FLAGS...
  name=$1
  shift
  # shellcheck disable=SC2086
  python -m edgeadapt.cli export $C "$@" --device stm32f746 \
    --out "$D/${name}_f746" --json "$D/${name}_f746/${name}_f746.json" || [ $? -eq 3 ]
}
ADAPT="--method ecotta --no-warmup --program adapt"
INFER="--method ecotta --no-warmup --program infer --backend portable"
# shellcheck disable=SC2086
{
  h743 ecotta_adapt $ADAPT
  f746 ecotta_adapt $ADAPT --skip-check  # it does not fit: no adaptation check there
  h743 ecotta_infer $INFER --quantize int8 --settings "$INT8"
  f746 ecotta_infer $INFER --quantize int8 --settings "$INT8"
  h743 tent_adapt --method tent --program adapt
  h743 ecotta_adapt_fp32 $ADAPT --settings '{"frozen_weights":"fp32"}'
  h743 ecotta_infer_fp32 $INFER --settings "$FP32"
}
