/* hal_mps2.c -- ../../src/hal.h on QEMU's mps2-an500 (Cortex-M7), for the protocol server.
 *
 * UART: UART0, an Arm CMSDK APB UART at 0x40004000 (QEMU's hw/char/cmsdk-apb-uart.c). It holds
 * one received byte; QEMU hands it the next only after the guest read the last, so nothing is
 * lost while the core computes: bytes wait in the pseudo-terminal. The RX interrupt only wakes
 * the core from WFI (the data is read by polling), so an idle device does not spin the host.
 * Flash: a region the linker script reserves in PSRAM (__ea_flash_start..__ea_flash_end),
 * programmed like NOR flash -- erase sets 0xFF, a write can only clear bits -- so a store that
 * writes without erasing fails here as it would on a part. Erased at power-on: QEMU's RAM
 * starts at zero, a blank part reads 0xFF. It lives as long as the QEMU process; a protocol
 * REBOOT keeps it.
 * Clock: the CMSDK dual timer's first counter, free-running at 25 MHz / 256 (QEMU's
 * SYSCLK_FRQ for the MPS2 boards, in host real time), widened to 64 bits at each read; a
 * millisecond count from SysTick interrupts fell behind (ticks are lost while QEMU is busy).
 * SysTick only wakes the core from WFI every millisecond so waits can time out. The DWT
 * cycle counter is not modelled by QEMU (reads 0).
 * Memory: the painted stack (startup.c) and the image's extent from the linker script's
 * symbols (qemu_server.py writes __text_start/__text_end around code and constants).
 * Random: no RNG on this board; a xorshift mixed with SysTick's current value at each call,
 * which depends on when the host's bytes arrived (not cryptographic; boot ids only).
 */
#include <stdint.h>
#include <string.h>

#include "hal.h"
#include "platform.h"

#define REG(addr) (*(volatile uint32_t *)(addr))

#define UART0 0x40004000u
#define UART_DATA REG(UART0 + 0x00)
#define UART_STATE REG(UART0 + 0x04)  /* bit 0 TX full, bit 1 RX full */
#define UART_CTRL REG(UART0 + 0x08)   /* bit 0 TX enable, 1 RX enable, 3 RX interrupt */
#define UART_INT REG(UART0 + 0x0C)    /* read: status; write 1s: clear */
#define UART_BAUDDIV REG(UART0 + 0x10)
#define UART0_RX_IRQ 0                /* mps2-an500: UART0 RX is IRQ 0, TX IRQ 1 */

#define SYST_CSR REG(0xE000E010u)
#define SYST_RVR REG(0xE000E014u)
#define SYST_CVR REG(0xE000E018u)
#define NVIC_ISER0 REG(0xE000E100u)
#define TIMER1_LOAD REG(0x40002000u)
#define TIMER1_VALUE REG(0x40002004u)
#define TIMER1_CTRL REG(0x40002008u) /* bit 7 enable, 3:2 prescale (2: /256), 1 32-bit */

#define SYSCLK_HZ 25000000u
#define SECTOR 4096u
#define TX_STALL_MS 2000u /* nobody drains the line: the bytes are lost, as on a UART */

extern uint8_t __ea_flash_start[], __ea_flash_end[];
extern uint8_t __text_start[], __text_end[], __data_start[], __data_end[], __bss_start[], __bss_end[];

static uint64_t g_ticks;      /* timer ticks since init (main context only) */
static uint32_t g_last_value; /* the down-counter at the last read */
static uint32_t g_rand = 0x9E3779B9u;

void SysTick_Handler(void) {} /* a wake-up from WFI, nothing more */

/* Milliseconds since init. Called at least every poll (50 ms) and around every program run,
 * far more often than the counter's wrap (2^32 ticks: 12.7 hours). */
static uint32_t now_ms(void) {
  uint32_t v = TIMER1_VALUE;
  g_ticks += (uint32_t)(g_last_value - v);
  g_last_value = v;
  return (uint32_t)(g_ticks * 256u / (SYSCLK_HZ / 1000u));
}

/* Only a wake-up: clear the flag, leave the byte for ea_hal_uart_read. */
void UART0RX_Handler(void) { UART_INT = 2u; }

void ea_hal_mps2_init(void) {
  SYST_RVR = SYSCLK_HZ / 1000u - 1u;
  SYST_CVR = 0;
  SYST_CSR = 7u; /* enable, interrupt, processor clock */
  TIMER1_LOAD = 0xFFFFFFFFu;
  TIMER1_CTRL = 0x80u | (2u << 2) | 0x02u; /* enabled, free-running, /256, 32-bit, no IRQ */
  g_last_value = TIMER1_VALUE;
  UART_BAUDDIV = 16u; /* the smallest QEMU accepts; it does not model the line's speed */
  UART_CTRL = 1u | 2u | 8u;
  NVIC_ISER0 = 1u << UART0_RX_IRQ;
  memset(__ea_flash_start, 0xFF, (size_t)(__ea_flash_end - __ea_flash_start));
}

static int rx_ready(void) { return (UART_STATE & 2u) != 0; }

int32_t ea_hal_uart_read(uint8_t *buf, size_t cap, uint32_t timeout_ms) {
  uint32_t start = now_ms();
  while (!rx_ready()) {
    if (now_ms() - start >= timeout_ms) return 0;
    __asm__ volatile("wfi"); /* SysTick or the RX interrupt wakes it */
  }
  /* Then what follows back to back. QEMU hands the UART the next byte once this one is read,
   * from its I/O thread, which needs the lock every register access takes: sleeping in WFI
   * until the RX interrupt, rather than polling, lets it in (measured: ~60 kB/s against ~9). */
  size_t n = 0;
  uint32_t idle_since = 0;
  int idle = 0;
  while (n < cap) {
    if (rx_ready()) {
      buf[n++] = (uint8_t)UART_DATA;
      idle = 0;
      continue;
    }
    uint32_t t = now_ms();
    if (!idle) idle_since = t, idle = 1;
    else if (t - idle_since > 1u) break;
    __asm__ volatile("wfi");
  }
  return (int32_t)n;
}

int ea_hal_uart_write(const uint8_t *buf, size_t len) {
  for (size_t i = 0; i < len; ++i) {
    uint32_t start = now_ms();
    while (UART_STATE & 1u)
      if (now_ms() - start > TX_STALL_MS) return -1;
    UART_DATA = buf[i];
  }
  return 0;
}

void ea_hal_uart_discard(void) {
  uint32_t last = now_ms();
  while (now_ms() - last <= 2u) {
    if (rx_ready()) {
      (void)UART_DATA;
      last = now_ms();
    }
  }
}

const uint8_t *ea_hal_flash_base(void) { return __ea_flash_start; }
uint32_t ea_hal_flash_size(void) { return (uint32_t)(__ea_flash_end - __ea_flash_start); }
uint32_t ea_hal_flash_sector(void) { return SECTOR; }

int ea_hal_flash_erase(uint32_t offset, uint32_t len) {
  if (offset % SECTOR || len % SECTOR || (uint64_t)offset + len > ea_hal_flash_size()) return -1;
  memset(__ea_flash_start + offset, 0xFF, len);
  return 0;
}

int ea_hal_flash_write(uint32_t offset, const void *data, uint32_t len) {
  if ((uint64_t)offset + len > ea_hal_flash_size()) return -1;
  const uint8_t *src = (const uint8_t *)data;
  uint8_t *dst = __ea_flash_start + offset;
  for (uint32_t i = 0; i < len; ++i) dst[i] &= src[i]; /* NOR: programming clears bits only */
  return memcmp(dst, src, len) == 0 ? 0 : -1;          /* a write over unerased bytes fails */
}

uint32_t ea_hal_clock_ms(void) { return now_ms(); }

uint32_t ea_hal_random_u32(void) {
  g_rand ^= SYST_CVR * 2654435761u ^ TIMER1_VALUE;
  g_rand ^= g_rand << 13;
  g_rand ^= g_rand >> 17;
  g_rand ^= g_rand << 5;
  return g_rand;
}

uint32_t ea_hal_memory(ea_hal_memory_t *out) {
  out->stack_size = (uint32_t)ea_stack_size();
  out->stack_high_water = (uint32_t)ea_stack_high_water();
  out->text_bytes = (uint32_t)(__text_end - __text_start);
  out->data_bytes = (uint32_t)(__data_end - __data_start);
  out->bss_bytes = (uint32_t)(__bss_end - __bss_start);
  return EA_HAL_MEMORY_STACK | EA_HAL_MEMORY_IMAGE;
}
