// main_server.cpp -- the bridge protocol server (../../src/server.cpp, as the host build runs
// it) on QEMU's mps2-an500, over UART0. Options come on the semihosting command line, as the
// host device's flags (all optional):
//   --lr=5e-3 --keepalive-ms=100 --max-payload=4096 --slowdown=1
// It prints "EA ready <profile>" on the semihosting console once it serves, then never
// returns; firmware_bridge/device/mcu/build.py's QemuDevice starts it with -serial pty.
#include <stdlib.h>
#include <string.h>

#include "platform.h"
#include "profile.h"
#include "server.h"

extern "C" {
void ea_hal_mps2_init(void);
// Static objects with destructors (the program slots) register them at start-up; a firmware
// never exits, so they are dropped instead of kept in a table.
void *__dso_handle = nullptr;
int __cxa_atexit(void (*)(void *), void *, void *) { return 0; }
}

namespace {

char g_cmdline[256];

// The value of `--key=` in the command line, or nullptr.
const char *option(const char *key) {
  size_t n = strlen(key);
  for (const char *p = g_cmdline; (p = strstr(p, key)) != nullptr; p += n)
    if ((p == g_cmdline || p[-1] == ' ') && p[n] == '=') return p + n + 1;
  return nullptr;
}

int stop(const char *why) {
  ea_platform_write("EA error ");
  ea_platform_write(why);
  ea_platform_write("\n");
  return 1;
}

}  // namespace

int main() {
  ea_hal_mps2_init();
  ea_platform_cmdline(g_cmdline, sizeof g_cmdline);
  const ea::Profile *profile = ea::find_profile(EA_SERVER_PROFILE);
  if (profile == nullptr) return stop("no profile " EA_SERVER_PROFILE " in this build");
  ea::ServerConfig config{profile, 5e-3, 4096, 100};
  if (const char *v = option("--lr")) config.lr = strtod(v, nullptr);
  if (const char *v = option("--keepalive-ms")) config.keepalive_ms = static_cast<uint16_t>(atoi(v));
  if (const char *v = option("--max-payload")) config.max_payload = static_cast<uint16_t>(atoi(v));
  if (const char *v = option("--slowdown")) config.slowdown = strtod(v, nullptr);
  if (config.max_payload < 64 || config.max_payload > 4096) return stop("--max-payload must be 64..4096");
  if (!(config.slowdown > 0)) return stop("--slowdown must be > 0");
  if (ea::server_boot(config) != 0) return stop("the flash region is too small for its layout");
  ea_platform_write("EA ready " EA_SERVER_PROFILE "\n");
  for (;;) ea::server_poll(50);  // the UART never goes away
}
