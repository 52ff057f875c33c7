/* hal_qemu.c -- platform.h on QEMU's mps2-an500 (a Cortex-M7): console and exit through Arm
 * semihosting (run QEMU with -semihosting). */
#include "platform.h"

static int semihost(int op, const void *arg) {
  register int r0 __asm__("r0") = op;
  register const void *r1 __asm__("r1") = arg;
  __asm__ volatile("bkpt 0xAB" : "+r"(r0) : "r"(r1) : "memory");
  return r0;
}

void ea_platform_write(const char *text) { semihost(0x04 /* SYS_WRITE0 */, text); }

void ea_platform_exit(int code) {
  /* SYS_EXIT with ADP_Stopped_ApplicationExit; on 32-bit Arm the code cannot be passed, so a
   * failure is reported as a run-time error (QEMU exits 1) and the text says which. */
  semihost(0x18, (const void *)(code == 0 ? 0x20026 : 0x20023));
  for (;;) {
  }
}

uint32_t ea_platform_cycles(void) {
  /* DWT->CYCCNT: QEMU does not model it (reads 0); on a board it counts core cycles. */
  return *(volatile uint32_t *)0xE0001004u;
}

int ea_platform_cmdline(char *buf, size_t cap) {
  struct {
    char *buf;
    int len;
  } block = {buf, (int)cap};
  if (cap == 0) return -1;
  buf[0] = 0;
  return semihost(0x15 /* SYS_GET_CMDLINE */, &block) == 0 ? 0 : -1;
}
