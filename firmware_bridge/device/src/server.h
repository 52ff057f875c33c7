/*
 * server.h -- the bridge protocol v2 device side (docs/bridge-protocol.md): framing through
 * the C codec, the session layer (versions, sessions, the retransmission cache, request
 * records by request_id, IN_PROGRESS, NAK) and one handler per request, over the HAL.
 * firmware_bridge/fake_device.py and _fake_model.py are the reference it follows; the
 * emulator (firmware_bridge/emulator/device.py) is what it must answer like, byte for byte
 * where the runtime allows.
 */
#ifndef EA_SERVER_H
#define EA_SERVER_H

#include <stdint.h>

#include "profile.h"

namespace ea {

struct ServerConfig {
  const Profile *profile;
  double lr;              // SGD step size of ADAPT (the emulator's --lr)
  uint16_t max_payload;   // 64..4096
  uint16_t keepalive_ms;  // IN_PROGRESS period while busy (0: never)
  // How many times longer than expected a program's load or run may take here: it scales
  // every IN_PROGRESS estimate (the emulator's guess before a run was timed, twice the timed
  // run after). 1 on a host; more under QEMU, whose speed follows the host machine's load.
  double slowdown = 1.0;
};

// Boot: read flash, load the committed programs. Returns 0, or -1 when flash is unusable.
int server_boot(const ServerConfig &config);
// Wait up to `timeout_ms` for bytes and serve every frame they complete.
// Returns -1 when the line is gone.
int server_poll(uint32_t timeout_ms);

}  // namespace ea

#endif  // EA_SERVER_H
