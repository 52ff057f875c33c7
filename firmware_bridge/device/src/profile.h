// profile.h -- the device profile a build enforces (devices/*.toml, compiled in) and the
// memory check the emulator makes with edgeadapt.export.check_fit.
#ifndef EA_PROFILE_H
#define EA_PROFILE_H

#include <stdint.h>

#include "refusal.h"

namespace ea {

struct Bank {
  const char *name;
  uint64_t usable_bytes;
  bool external;
};

struct Profile {
  const char *key;   // "stm32h743": DEVICE_INFO's profile
  const char *name;  // "STM32H743": named in DOES_NOT_FIT's text
  bool mcu;          // constants stay in flash (MCU) or count against RAM (Linux boards)
  uint64_t flash_bytes, flash_reserved_bytes;
  const Bank *banks;  // data banks: internal (not code-only) first, then external RAM
  int n_banks;
};

// The profiles this build knows (generated from devices/*.toml); nullptr when unknown.
const Profile *find_profile(const char *key);
void list_profiles(char *out, int cap);

// RAM and flash the device advertises in DEVICE_INFO (as the emulator computes them).
uint32_t profile_ram_bytes(const Profile &p);
uint32_t profile_flash_bytes(const Profile &p);

// check_fit (export/fit.py) for arenas planned anywhere (no bank plan) and constants:
// true when everything fits; else fills `r` with DOES_NOT_FIT, the bytes missing and the
// check's message.
bool check_fit(const Profile &p, const uint64_t *arenas, int n_arenas, uint64_t constants,
               Refusal *r);

}  // namespace ea

#endif  // EA_PROFILE_H
