// profile.cpp -- check_fit of export/fit.py, for the sizes the emulator passes it: every
// planned arena placed first-fit decreasing over the banks (internal largest first, then
// external), constants in flash on an MCU and in a bank on a Linux board.
#include "profile.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

namespace ea {

bool refuse(Refusal *r, uint16_t code, uint32_t arg, const char *fmt, ...) {
  r->code = code;
  r->arg = arg;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(r->text, sizeof r->text, fmt, ap);
  va_end(ap);
  // vsnprintf may cut a UTF-8 character in two: drop the partial one (the emulator's clip()).
  size_t n = strlen(r->text), lead = n;
  while (lead > 0 && (static_cast<unsigned char>(r->text[lead - 1]) & 0xC0) == 0x80) --lead;
  if (lead > 0 && (static_cast<unsigned char>(r->text[lead - 1]) & 0x80)) {
    unsigned char c = static_cast<unsigned char>(r->text[lead - 1]);
    size_t want = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : 2;
    if (n - (lead - 1) < want) r->text[lead - 1] = 0;
  }
  return false;
}

uint32_t profile_ram_bytes(const Profile &p) {
  uint64_t ram = 0;
  for (int i = 0; i < p.n_banks; ++i) ram += p.banks[i].usable_bytes;
  return ram > 0xFFFFFFFFu ? 0xFFFFFFFFu : static_cast<uint32_t>(ram);
}

uint32_t profile_flash_bytes(const Profile &p) {
  uint64_t flash = p.flash_bytes > p.flash_reserved_bytes ? p.flash_bytes - p.flash_reserved_bytes
                                                          : 0;
  if (!p.mcu && flash == 0) flash = profile_ram_bytes(p);  // programs are files in RAM
  return flash > 0xFFFFFFFFu ? 0xFFFFFFFFu : static_cast<uint32_t>(flash);
}

namespace {

constexpr int kMaxBanks = 16;
constexpr int kMaxItems = 24;

// 1234567 -> "1,234,567" (Python's f"{n:,}"), into a small rotating buffer.
const char *commas(uint64_t n) {
  static char bufs[8][32];
  static int next = 0;
  char *out = bufs[next++ % 8];
  char digits[24];  // by hand: newlib-nano's printf (the MCU build) has no %llu
  int len = 0;
  do {
    digits[len++] = static_cast<char>('0' + n % 10);
    n /= 10;
  } while (n);
  for (int i = 0; i < len / 2; ++i) {
    char t = digits[i]; digits[i] = digits[len - 1 - i]; digits[len - 1 - i] = t;
  }
  int o = 0;
  for (int i = 0; i < len; ++i) {
    out[o++] = digits[i];
    if ((len - i - 1) % 3 == 0 && i != len - 1) out[o++] = ',';
  }
  out[o] = 0;
  return out;
}

}  // namespace

bool check_fit(const Profile &p, const uint64_t *arenas, int n_arenas, uint64_t constants,
               Refusal *r) {
  int order[kMaxBanks], nb = p.n_banks < kMaxBanks ? p.n_banks : kMaxBanks;
  for (int i = 0; i < nb; ++i) order[i] = i;
  auto before = [&](int a, int b) {  // (external, -usable): internal, largest first
    const Bank &x = p.banks[a], &y = p.banks[b];
    if (x.external != y.external) return !x.external;
    return x.usable_bytes > y.usable_bytes;
  };
  for (int i = 1; i < nb; ++i)  // stable insertion sort, as Python's sorted()
    for (int j = i; j > 0 && before(order[j], order[j - 1]); --j) {
      int t = order[j]; order[j] = order[j - 1]; order[j - 1] = t;
    }
  uint64_t free_[kMaxBanks];
  for (int i = 0; i < nb; ++i) free_[i] = p.banks[i].usable_bytes;
  struct Item { char name[32]; uint64_t bytes; } items[kMaxItems];
  int n = 0;
  for (int i = 0; i < n_arenas && n < kMaxItems; ++i) {
    if (arenas[i] == 0) continue;
    snprintf(items[n].name, sizeof items[n].name, "arena %d", i);
    items[n++].bytes = arenas[i];
  }
  char shortfalls[1024] = "";
  uint64_t missing = 0;
  auto add_short = [&](const char *item, uint64_t bytes, const char *where, uint64_t short_by) {
    size_t used = strlen(shortfalls);
    snprintf(shortfalls + used, sizeof shortfalls - used, "%s%s (%s B) does not fit: %s is %s B short",
             used ? "; " : "", item, commas(bytes), where, commas(short_by));
    missing += short_by;
  };
  if (p.mcu) {
    uint64_t flash = p.flash_bytes - p.flash_reserved_bytes;
    if (constants > flash) add_short("constants", constants, "flash", constants - flash);
  } else if (constants > 0 && n < kMaxItems) {
    snprintf(items[n].name, sizeof items[n].name, "constants");
    items[n++].bytes = constants;
  }
  for (int i = 1; i < n; ++i)  // largest first, stable
    for (int j = i; j > 0 && items[j].bytes > items[j - 1].bytes; --j) {
      Item t = items[j]; items[j] = items[j - 1]; items[j - 1] = t;
    }
  for (int i = 0; i < n; ++i) {
    int bank = -1;
    for (int k = 0; k < nb && bank < 0; ++k)
      if (free_[order[k]] >= items[i].bytes) bank = order[k];
    if (bank >= 0) {
      free_[bank] -= items[i].bytes;
      continue;
    }
    int closest = nb ? order[0] : -1;
    for (int k = 1; k < nb; ++k)
      if (free_[order[k]] > free_[closest]) closest = order[k];
    uint64_t have = closest >= 0 ? free_[closest] : 0;
    add_short(items[i].name, items[i].bytes, closest >= 0 ? p.banks[closest].name : "RAM",
              items[i].bytes - have);
    if (closest >= 0) free_[closest] = 0;  // grown by the shortfall, that bank is full
  }
  if (!shortfalls[0]) return true;
  uint32_t arg = missing > 0xFFFFFFFFu ? 0xFFFFFFFFu : static_cast<uint32_t>(missing);
  return refuse(r, kDoesNotFit, arg, "does not fit %s: %s; %s B missing in all", p.name,
                shortfalls, commas(missing));
}

}  // namespace ea
