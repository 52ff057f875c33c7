#!/bin/sh
# The EcoTTA adaptation step inside an STM32F746's 320 KB of SRAM, on the Cortex-M7 firmware
# in QEMU: the ResNet-20 step of EcoTTAConfig.device_small() (meta networks
# on stages 2 and 3, one part each; stage 1 runs frozen on stream statistics) with int8 kept
# activations, planned for and linked against the STM32F746 alone, run 20 SGD steps against
# the host's runtime; and its neighbours (three parts; fp32 kept activations), linked the same
# way to show they do not fit. Writes benchmarks/firmware/small_sram/results.{json,md}.
#   sh benchmarks/firmware/small_sram.sh   # in the project venv; ~5 min on 2 cores, needs the firmware toolchain
set -e
cd "$(dirname "$0")/../.."
D=build/mcu/small-sram-programs
rm -rf "$D" && mkdir -p "$D"
C="--model resnet20 --checkpoint ../shared/models/resnet20_cifar10jpeg.pt --batch 1 --method ecotta --program adapt --no-warmup"
S=$(python -c "import json; from edgeadapt.config import SMALL_SRAM_SETTINGS as s; print(json.dumps(s))")  # EcoTTAConfig.device_small()
# Exit 3 would mean it does not fit the part: set -e stops here then.
python -m edgeadapt.cli export $C --settings "$S" --kept-activations int8 --device stm32f746 \
  --out "$D/ecotta_adapt_small_f746" --json "$D/ecotta_adapt_small_f746/ecotta_adapt_small_f746.json"
# Its neighbours, linked against the part the same way: the row is the linker's overflow.
# Three parts on stages 2-3 (int8 kept activations), and two with fp32 kept activations.
# Exit 3: they do not fit (the fit check says by how much; the link measures it).
python -m edgeadapt.cli export $C --settings "$(echo "$S" | sed 's/"num_parts": 2/"num_parts": 3/')" \
  --kept-activations int8 --device stm32f746 --skip-check --out "$D/ecotta_adapt_small_k3_f746" \
  --json "$D/ecotta_adapt_small_k3_f746/ecotta_adapt_small_k3_f746.json" || [ $? -eq 3 ]
python -m edgeadapt.cli export $C --settings "$S" --device stm32f746 --skip-check \
  --out "$D/ecotta_adapt_small_fp32_f746" \
  --json "$D/ecotta_adapt_small_fp32_f746/ecotta_adapt_small_fp32_f746.json" || [ $? -eq 3 ]
python benchmarks/firmware/run.py --programs "$D" --steps 20 --out benchmarks/firmware/small_sram \
  --note "The ResNet-20 EcoTTA adaptation step of \`EcoTTAConfig.device_small()\` (int8 frozen weights, batch 1, meta networks on stages 2 and 3 only, one part each, SGD lr 3e-4; stage 1's BNs still on the stream's statistics) exported with \`--kept-activations int8 --device stm32f746\`: planned for the part's DTCM+SRAM1+SRAM2 (320 KB from 0x20000000) and linked against the part alone, no external RAM. \`--no-warmup\`: sizes and memory do not depend on the warm-up. Made by \`sh benchmarks/firmware/small_sram.sh\`." \
  --note "Device vs host: the device's SGD steps (lr 1e-4, momentum 0) against the host's ExecuTorch runtime stepping the same program. The int8 kept activations make the gradients approximations, computed alike on both sides. What this configuration gets on the benchmark's streams: ../../cifar10c/record_stream_continual_n1000.md (row \`ecotta (device, 320 KB: ...)\`)." \
  --note "Its neighbours, exported and linked the same way: \`ecotta_adapt_small_k3_f746\` with three parts on stages 2 and 3 (\`num_parts\` 3), \`ecotta_adapt_small_fp32_f746\` with fp32 kept activations. The row is what the part says: a link that overflows, or a \`load_method\` that runs out of the memory left." \
  --note "The flash holds the 245,760 B of test inputs linked in for the run besides the program; a device's frames arrive over the bridge instead."
