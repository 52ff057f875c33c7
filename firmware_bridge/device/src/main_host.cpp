// main_host.cpp -- the device as a host program:
//   edgeadapt-device --profile stm32h743 [--flash-dir DIR --lr 5e-3 --max-payload 4096
//                    --keepalive-ms 100 --link-file PATH]
// prints "PTY <slave path>" on stdout (as the Python emulator does) and serves the bridge
// protocol on it until SIGINT/SIGTERM.
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hal_host.h"
#include "profile.h"
#include "server.h"

namespace {

volatile sig_atomic_t g_stop = 0;

void on_signal(int) { g_stop = 1; }

int usage(const char *why) {
  char names[512];
  ea::list_profiles(names, sizeof names);
  fprintf(stderr, "edgeadapt-device: %s\nusage: edgeadapt-device --profile NAME [--flash-dir DIR] "
          "[--lr LR] [--max-payload N] [--keepalive-ms MS] [--link-file PATH]\nprofiles: %s\n", why, names);
  return 2;
}

}  // namespace

int main(int argc, char **argv) {
  const char *profile_key = nullptr, *flash_dir = nullptr, *link_file = nullptr;
  double lr = 5e-3;
  long max_payload = 4096, keepalive = 100;
  for (int i = 1; i < argc; ++i) {
    const char *a = argv[i];
    const char *eq = strchr(a, '=');
    char key[64];
    const char *val;
    if (eq != nullptr) {
      snprintf(key, sizeof key, "%.*s", static_cast<int>(eq - a), a);
      val = eq + 1;
    } else {
      snprintf(key, sizeof key, "%s", a);
      if (i + 1 >= argc) return usage("missing value");
      val = argv[++i];
    }
    if (!strcmp(key, "--profile")) profile_key = val;
    else if (!strcmp(key, "--flash-dir")) flash_dir = val;
    else if (!strcmp(key, "--link-file")) link_file = val;
    else if (!strcmp(key, "--lr")) lr = strtod(val, nullptr);
    else if (!strcmp(key, "--max-payload")) max_payload = strtol(val, nullptr, 10);
    else if (!strcmp(key, "--keepalive-ms")) keepalive = strtol(val, nullptr, 10);
    else if (!strcmp(key, "--seed") || !strcmp(key, "--log-level") || !strcmp(key, "--threads")) continue;
    else if (!strcmp(key, "--boot-ms")) continue;  // only a reboot's deafness; none here
    else if (!strcmp(key, "--drop") || !strcmp(key, "--corrupt") || !strcmp(key, "--delay") ||
             !strcmp(key, "--delay-ms") || !strcmp(key, "--reset-at") || !strcmp(key, "--reboot")) {
      if (strtod(val, nullptr) != 0.0)
        return usage("fault injection is the Python emulator's (python -m edgeadapt.firmware_bridge.emulator)");
    } else {
      char why[96];
      snprintf(why, sizeof why, "unknown option %s", key);
      return usage(why);
    }
  }
  if (profile_key == nullptr) return usage("--profile is required");
  const ea::Profile *profile = ea::find_profile(profile_key);
  if (profile == nullptr) {
    char why[96];
    snprintf(why, sizeof why, "unknown profile '%s'", profile_key);
    return usage(why);
  }
  if (max_payload < 64 || max_payload > 4096) return usage("--max-payload must be 64..4096");
  if (keepalive < 0 || keepalive > 65535) return usage("--keepalive-ms must be 0..65535");
  // Flash: manifest sectors, the staging log, then twice the advertised flash (flash_store.h).
  uint64_t capacity = ea::profile_flash_bytes(*profile);
  uint64_t bytes = 6 * 4096ull + 2 * ((capacity + 4095) / 4096 * 4096);
  char path[1024];
  if (flash_dir != nullptr) {
    mkdir(flash_dir, 0755);
    snprintf(path, sizeof path, "%s/flash.bin", flash_dir);
  }
  if (ea_host_open_flash(flash_dir ? path : nullptr, bytes) != 0) {
    fprintf(stderr, "edgeadapt-device: cannot map %llu B of flash: %s\n",
            static_cast<unsigned long long>(bytes), strerror(errno));
    return 1;
  }
  const char *pty = ea_host_open_pty();
  if (pty == nullptr) {
    fprintf(stderr, "edgeadapt-device: cannot open a pseudo-terminal: %s\n", strerror(errno));
    return 1;
  }
  ea::ServerConfig config{profile, lr, static_cast<uint16_t>(max_payload), static_cast<uint16_t>(keepalive)};
  if (ea::server_boot(config) != 0) {
    fprintf(stderr, "edgeadapt-device: the flash is too small for its layout\n");
    return 1;
  }
  signal(SIGINT, on_signal);
  signal(SIGTERM, on_signal);
  if (link_file != nullptr) {
    char tmp[1100];
    snprintf(tmp, sizeof tmp, "%s.tmp", link_file);
    FILE *f = fopen(tmp, "w");
    if (f == nullptr || fprintf(f, "%s\n", pty) < 0 || fclose(f) != 0 || rename(tmp, link_file) != 0) {
      fprintf(stderr, "edgeadapt-device: cannot write %s\n", link_file);
      return 1;
    }
  }
  printf("PTY %s\n", pty);
  fflush(stdout);
  while (!g_stop)
    if (ea::server_poll(50) < 0) break;
  ea_host_close();
  return 0;
}
