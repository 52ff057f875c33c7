# arm-none-eabi-gcc for a Cortex-M7 with a single-precision FPv5 (STM32F746). The STM32H743's
# FPv5-D16 runs this code too; ExecuTorch's own toolchain file passes fpv4-sp-d16 for the M7,
# the Cortex-M4's FPU, which leaves the M7's VFMA/VCVT variants unused.
set(CMAKE_SYSTEM_NAME Generic)
set(CMAKE_SYSTEM_PROCESSOR cortex-m7)
set(CMAKE_C_COMPILER arm-none-eabi-gcc)
set(CMAKE_CXX_COMPILER arm-none-eabi-g++)
set(CMAKE_ASM_COMPILER arm-none-eabi-gcc)
set(CMAKE_EXECUTABLE_SUFFIX ".elf")
set(CMAKE_TRY_COMPILE_TARGET_TYPE STATIC_LIBRARY)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)

set(EA_MCU_FLAGS "-mcpu=cortex-m7 -mthumb -mfpu=fpv5-sp-d16 -mfloat-abi=hard")
# -ffp-contract=off: no fused multiply-adds, so the portable kernels and the SGD update round
# as the host's x86-64 build does (the comparison with the host is bit-for-bit where it can be).
set(CMAKE_C_FLAGS_INIT "${EA_MCU_FLAGS} -ffunction-sections -fdata-sections -ffp-contract=off")
set(CMAKE_CXX_FLAGS_INIT
    "${EA_MCU_FLAGS} -ffunction-sections -fdata-sections -ffp-contract=off -fno-exceptions -fno-rtti -fno-unwind-tables")
set(CMAKE_ASM_FLAGS_INIT "${EA_MCU_FLAGS}")
set(CMAKE_EXE_LINKER_FLAGS_INIT "${EA_MCU_FLAGS} -Wl,--gc-sections --specs=nano.specs --specs=nosys.specs -nostartfiles")
