/* platform.h -- what the MCU runner needs from a board besides the protocol HAL
 * (../src/hal.h, which a protocol server adds: UART, flash, clock). QEMU's mps2-an500
 * implements these with semihosting (hal_qemu.c); a board maps them to a UART and SysTick. */
#ifndef EA_MCU_PLATFORM_H
#define EA_MCU_PLATFORM_H
#include <stddef.h>
#include <stdint.h>
#ifdef __cplusplus
extern "C" {
#endif
void ea_platform_write(const char *text);      /* console (NUL-terminated) */
void ea_platform_exit(int code) __attribute__((noreturn));
uint32_t ea_platform_cycles(void);             /* a free-running counter (DWT where present) */
/* The command line the host gave the firmware (QEMU: -semihosting-config arg=...), NUL-
 * terminated into buf; 0, or -1 when there is none. */
int ea_platform_cmdline(char *buf, size_t cap);

/* The stack, painted at reset (startup.c): bytes between its bottom and the deepest word
 * written since, i.e. the high-water mark measured, not estimated. */
size_t ea_stack_size(void);
size_t ea_stack_high_water(void);

/* Free RAM the linker script leaves in the main bank (the method allocator's pool). */
uint8_t *ea_pool_start(void);
size_t ea_pool_size(void);
#ifdef __cplusplus
}
#endif
#endif
