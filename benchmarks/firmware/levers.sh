#!/bin/sh
# The opt-in memory lever of the EcoTTA adaptation step on the Cortex-M7 firmware in QEMU:
# the ResNet-20 step of EcoTTAConfig.device() exported with --kept-activations int8, planned
# for the STM32H743 (built for QEMU's memories and the part, run 20 SGD steps against the
# host's runtime) and for the STM32F746 (linked against the part: the overflow is the row).
# The shipped (scheduled) step is in ../results.md. Writes benchmarks/firmware/levers/results.{json,md}.
#   sh benchmarks/firmware/levers.sh   # in the project venv; ~6 min on 2 cores, needs the firmware toolchain
set -e
cd "$(dirname "$0")/../.."
D=build/mcu/lever-programs
rm -rf "$D" && mkdir -p "$D"
C="--model resnet20 --checkpoint ../shared/models/resnet20_cifar10jpeg.pt --batch 1 --method ecotta --program adapt --no-warmup"
for v in "int8:--kept-activations int8"; do
  name=${v%%:*}
  flags=${v#*:}
  # shellcheck disable=SC2086
  python -m edgeadapt.cli export $C $flags --device stm32h743 --out "$D/ecotta_adapt_$name" \
    --json "$D/ecotta_adapt_$name/ecotta_adapt_$name.json"
  # Exit 3: it does not fit the part (the build below measures by how much).
  # shellcheck disable=SC2086
  python -m edgeadapt.cli export $C $flags --device stm32f746 --skip-check --out "$D/ecotta_adapt_${name}_f746" \
    --json "$D/ecotta_adapt_${name}_f746/ecotta_adapt_${name}_f746.json" || [ $? -eq 3 ]
done
python benchmarks/firmware/run.py --programs "$D" --steps 20 --out benchmarks/firmware/levers \
  --note "The ResNet-20 EcoTTA adaptation step of \`EcoTTAConfig.device()\` (int8 frozen weights, batch 1, ReLU masks bit-packed, scheduled) with the opt-in memory lever: \`ecotta_adapt_int8\` exported with \`--kept-activations int8\`. \`--no-warmup\`: sizes and memory do not depend on the warm-up. Made by \`sh benchmarks/firmware/levers.sh\`." \
  --note "The shipped step (scheduled, fp32 kept activations) is in ../results.md. What each lever frees at the arena's peak: ../arena_peak.md." \
  --note "Device vs host: the device's SGD steps (lr 1e-4, momentum 0) against the host's ExecuTorch runtime stepping the same program. The int8 program's gradients are its own approximation, computed alike on both sides; against eager and the fp32 step: ../int8_activations.md." \
  --note "The \`_f746\` FLASH overflows count the 245,760 B of test inputs linked in for the run; without them the programs fit the flash."
