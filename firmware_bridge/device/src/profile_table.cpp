// profile_table.cpp -- the profiles compiled in: profiles.inc is generated from
// devices/*.toml by build_host.py (edgeadapt.export.devices reads them).
#include <stdio.h>
#include <string.h>

#include "profile.h"

namespace ea {
namespace {
#include "profiles.inc"  // kProfiles[], kNumProfiles
}  // namespace

const Profile *find_profile(const char *key) {
  for (int i = 0; i < kNumProfiles; ++i)
    if (strcmp(kProfiles[i].key, key) == 0) return &kProfiles[i];
  return nullptr;
}

void list_profiles(char *out, int cap) {
  int used = 0;
  out[0] = 0;
  for (int i = 0; i < kNumProfiles && used < cap; ++i)
    used += snprintf(out + used, static_cast<size_t>(cap - used), "%s%s", i ? ", " : "", kProfiles[i].key);
}

}  // namespace ea
