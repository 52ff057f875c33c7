/* console.c -- line-buffered text over the platform's console (ea_platform_write). */
#include "console.h"

#include "platform.h"

static char line[128];
static size_t used;

void ea_flush(void) {
  if (used) {
    line[used] = 0;
    ea_platform_write(line);
    used = 0;
  }
}

static void put_char(char c) {
  if (used == sizeof line - 1) ea_flush();
  line[used++] = c;
  if (c == '\n') ea_flush();
}

void ea_put(const char *s) {
  while (*s) put_char(*s++);
}

void ea_put_u(uint32_t v) {
  char buf[11];
  int i = 10;
  buf[i] = 0;
  do {
    buf[--i] = (char)('0' + v % 10);
    v /= 10;
  } while (v);
  ea_put(buf + i);
}

void ea_put_i(int32_t v) {
  if (v < 0) {
    put_char('-');
    ea_put_u((uint32_t)(-(v + 1)) + 1u);
  } else {
    ea_put_u((uint32_t)v);
  }
}

void ea_put_hex(uint32_t v) {
  static const char digits[] = "0123456789abcdef";
  for (int s = 28; s >= 0; s -= 4) put_char(digits[(v >> s) & 0xF]);
}

void ea_put_floats(const float *x, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    union { float f; uint32_t u; } bits = {x[i]};
    put_char(' ');
    ea_put_hex(bits.u);
  }
}
