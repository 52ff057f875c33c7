/* console.h -- text output for the self-test, without printf (newlib's printf would add
 * ~20 KB of code and a heap to every figure this firmware reports). */
#ifndef EA_MCU_CONSOLE_H
#define EA_MCU_CONSOLE_H
#include <stddef.h>
#include <stdint.h>
#ifdef __cplusplus
extern "C" {
#endif
void ea_put(const char *s);            /* buffered; a line goes out at '\n' */
void ea_put_u(uint32_t v);             /* decimal */
void ea_put_i(int32_t v);
void ea_put_hex(uint32_t v);           /* 8 hex digits: floats go out as their bits, exactly */
void ea_put_floats(const float *x, size_t n);  /* " xxxxxxxx" per value */
void ea_flush(void);
#ifdef __cplusplus
}
#endif
#endif
