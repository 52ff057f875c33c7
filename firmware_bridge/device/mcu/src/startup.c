/* startup.c -- reset for a Cortex-M7 without a vendor HAL: copy .data, zero .bss, paint the
 * stack (so its high-water mark can be measured), enable the FPU, run static constructors
 * (ExecuTorch registers its kernels from them), call main. */
#include <stddef.h>
#include <stdint.h>

#include "platform.h"

extern uint32_t __data_load[], __data_start[], __data_end[], __bss_start[], __bss_end[];
extern uint32_t __stack_bottom[], __stack_top[], __pool_start[], __pool_end[];
extern void (*__init_array_start[])(void), (*__init_array_end[])(void);
int main(void);

#define PAINT 0xC0FFEE55u

__attribute__((noreturn, naked)) void Reset_Handler(void) {
  /* Naked, no stack use before the paint: the paint covers the whole stack but the top 64
   * bytes, where this code runs. */
  __asm__ volatile(
      "ldr r0, =__stack_bottom\n"
      "ldr r1, =__stack_top\n"
      "sub r1, r1, #64\n"
      "ldr r2, =0xC0FFEE55\n"
      "1: cmp r0, r1\n"
      "bhs 2f\n"
      "str r2, [r0], #4\n"
      "b 1b\n"
      "2: b ea_reset_c\n");
}

__attribute__((noreturn, used)) void ea_reset_c(void) {
  for (uint32_t *s = __data_load, *d = __data_start; d < __data_end;) *d++ = *s++;
  for (uint32_t *d = __bss_start; d < __bss_end;) *d++ = 0;
  *(volatile uint32_t *)0xE000ED88u |= 0xFu << 20; /* CPACR: CP10, CP11 full access */
  __asm__ volatile("dsb\nisb");
  *(volatile uint32_t *)0xE000EDFCu |= 1u << 24;  /* DEMCR.TRCENA: enable the DWT */
  *(volatile uint32_t *)0xE0001000u |= 1u;        /* DWT_CTRL.CYCCNTENA */
  for (void (**f)(void) = __init_array_start; f < __init_array_end; ++f) (*f)();
  ea_platform_exit(main());
}

size_t ea_stack_size(void) { return (size_t)((uint8_t *)__stack_top - (uint8_t *)__stack_bottom); }

size_t ea_stack_high_water(void) {
  const uint32_t *p = __stack_bottom;
  while (p < __stack_top && *p == PAINT) ++p;
  return (size_t)((const uint8_t *)__stack_top - (const uint8_t *)p);
}

uint8_t *ea_pool_start(void) { return (uint8_t *)__pool_start; }
size_t ea_pool_size(void) { return (size_t)((uint8_t *)__pool_end - (uint8_t *)__pool_start); }

static void fault(void) {
  ea_platform_write("EA fault\n");
  ea_platform_exit(3);
}

void HardFault_Handler(void) { fault(); }

/* SysTick and the UART's RX interrupt: a board's HAL defines them (hal_mps2.c); unused,
 * they stay faults, as every other vector. */
void SysTick_Handler(void) __attribute__((weak, alias("fault")));
void UART0RX_Handler(void) __attribute__((weak, alias("fault")));

/* The 16 system exceptions, then mps2-an500's IRQ 0 (UART0 RX). */
__attribute__((section(".vectors"), used)) static void (*const vectors[17])(void) = {
    (void (*)(void))__stack_top, Reset_Handler, fault, HardFault_Handler, fault, fault, fault,
    0, 0, 0, 0, fault, fault, 0, fault, SysTick_Handler, UART0RX_Handler,
};

/* No heap. ExecuTorch's kernels util still references malloc (broadcast_tensor, unused by the
 * kernels built here, but linked before --gc-sections drops it): a call fails, visibly, as
 * the kernel checks the pointer and aborts. */
void *malloc(size_t n) { (void)n; return 0; }
void *calloc(size_t n, size_t m) { (void)n; (void)m; return 0; }
void *realloc(void *p, size_t n) { (void)p; (void)n; return 0; }
void free(void *p) { (void)p; }
void *_sbrk(int n) { (void)n; return (void *)-1; }
