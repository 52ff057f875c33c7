// hal_host.h -- setup of the host HAL (POSIX): a pseudo-terminal and a flash file.
#ifndef EA_HAL_HOST_H
#define EA_HAL_HOST_H

#include <stdint.h>

// Open a pty (raw, slave kept open); returns its slave path, or nullptr.
const char *ea_host_open_pty(void);
// Map `bytes` of flash: the file `path` (created sparse when new), or anonymous memory when
// path is nullptr. Returns 0, or -1 with errno set.
int ea_host_open_flash(const char *path, uint64_t bytes);
void ea_host_close(void);

#endif  // EA_HAL_HOST_H
