#!/bin/sh
# EcoTTA's teacher option on the Cortex-M7 firmware in QEMU: the ResNet-20 adaptation step of
# EcoTTAConfig.device() with teacher_momentum 0.999 and 4 views (int8 frozen weights, batch 1),
# exported for the STM32H743 (its first plan leaves no bank room for its 250 KB of runtime
# tables; the exporter plans it again, export/table_room.py), built for QEMU's memories and
# for the part, and stepped 10 times against the host's runtime. The views' random numbers
# are linked in per step as the host draws them (build.py view_draws); 10 steps of them are
# 493 KB of the part's 2 MB of flash. Writes benchmarks/firmware/teacher/results.{json,md}.
#   sh benchmarks/firmware/teacher.sh   # in the project venv; ~12 min on 2 cores, needs the firmware toolchain
set -e
cd "$(dirname "$0")/../.."
D=build/mcu/teacher-programs
rm -rf "$D" && mkdir -p "$D"
python -m edgeadapt.cli export --model resnet20 --checkpoint ../shared/models/resnet20_cifar10jpeg.pt \
  --batch 1 --method ecotta --no-warmup --program adapt \
  --settings '{"teacher_momentum": 0.999, "teacher_views": 4}' \
  --device stm32h743 --out "$D/ecotta_teacher_adapt" --json "$D/ecotta_teacher_adapt/ecotta_teacher_adapt.json"
python benchmarks/firmware/run.py --programs "$D" --steps 10 --inputs 10 --out benchmarks/firmware/teacher \
  --note "The ResNet-20 EcoTTA adaptation step of \`EcoTTAConfig.device()\` with its mean teacher (\`teacher_momentum\` 0.999, \`teacher_views\` 4; int8 frozen weights, batch 1, scheduled), exported for the STM32H743, where the exporter planned it again to keep one bank room for its runtime tables. \`--no-warmup\`: sizes and memory do not depend on the warm-up. Made by \`sh benchmarks/firmware/teacher.sh\`." \
  --note "The views' random numbers (4 views: 9 uniform numbers, a blur number and a noise image each) are inputs of the program; the firmware has no generator for them, so build.py links each step's draws beside the images, drawn as the host's TrainingRunner draws them (seed 0): the device steps what the host steps." \
  --note "Device vs host: the device's SGD steps (lr 1e-4, momentum 0) against the host's ExecuTorch runtime stepping the same program, 10 steps over 10 CIFAR-10 test images."
