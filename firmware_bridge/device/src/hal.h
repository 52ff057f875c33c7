/*
 * hal.h -- the only platform code the edgeadapt device firmware calls.
 *
 * Everything above this header (server, flash store, programs) is portable C++ with static
 * memory; a port supplies these functions. The host build (hal_host.cpp) serves a
 * pseudo-terminal and keeps flash in a file; an MCU build maps them to its UART driver,
 * its flash controller and SysTick.
 */
#ifndef EA_HAL_H
#define EA_HAL_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* UART: read up to cap bytes, waiting at most timeout_ms for the first; returns the count
 * (0 on timeout) or -1 when the line is gone. write blocks until all bytes are queued. */
int32_t ea_hal_uart_read(uint8_t *buf, size_t cap, uint32_t timeout_ms);
int ea_hal_uart_write(const uint8_t *buf, size_t len);
/* Forget received bytes not read yet (a reboot loses the UART's buffer). */
void ea_hal_uart_discard(void);

/* Flash: readable in place at ea_hal_flash_base() (execute-in-place / memory mapped);
 * erase sets whole sectors to 0xFF, write programs bytes. Offsets are from the base.
 * Both return 0 on success, negative on failure (bad range, device error). */
const uint8_t *ea_hal_flash_base(void);
uint32_t ea_hal_flash_size(void);
uint32_t ea_hal_flash_sector(void);
int ea_hal_flash_erase(uint32_t offset, uint32_t len);
int ea_hal_flash_write(uint32_t offset, const void *data, uint32_t len);

/* Milliseconds since an arbitrary start, wrapping. */
uint32_t ea_hal_clock_ms(void);
/* A random u32 (boot id, session): a hardware RNG or a seeded source. */
uint32_t ea_hal_random_u32(void);

/* What the firmware image and its stack take, for GET_MEMORY. Fill what the platform can
 * measure and return which: EA_HAL_MEMORY_STACK (a painted stack: its size and deepest use
 * since boot), EA_HAL_MEMORY_IMAGE (text, data, bss from the linker's symbols); 0 when it
 * can measure neither (a hosted build: no fixed image, a stack the OS grows). */
#define EA_HAL_MEMORY_STACK 1u
#define EA_HAL_MEMORY_IMAGE 2u
typedef struct {
  uint32_t stack_high_water, stack_size, text_bytes, data_bytes, bss_bytes;
} ea_hal_memory_t;
uint32_t ea_hal_memory(ea_hal_memory_t *out);

#ifdef __cplusplus
}
#endif

#endif /* EA_HAL_H */
