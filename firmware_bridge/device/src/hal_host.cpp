// hal_host.cpp -- the HAL on Linux/macOS: the UART is the master side of a pseudo-terminal
// (the host opens the slave path like a serial port), flash is a memory-mapped file (or
// anonymous memory), the clock is CLOCK_MONOTONIC.
#include "hal_host.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "hal.h"

namespace {

constexpr uint32_t kSector = 4096;
int g_master = -1, g_slave = -1;
char g_path[256];
uint8_t *g_flash = nullptr;
uint64_t g_flash_bytes = 0;
int g_flash_fd = -1;

}  // namespace

const char *ea_host_open_pty(void) {
  g_master = posix_openpt(O_RDWR | O_NOCTTY);
  if (g_master < 0 || grantpt(g_master) != 0 || unlockpt(g_master) != 0) return nullptr;
  const char *name = ptsname(g_master);
  if (name == nullptr) return nullptr;
  snprintf(g_path, sizeof g_path, "%s", name);
  // Keep the slave open: the master then never sees EIO while no host has it open. Raw
  // before anyone can open it: no echo, no line editing, no CR/LF translation.
  g_slave = open(g_path, O_RDWR | O_NOCTTY);
  if (g_slave < 0) return nullptr;
  struct termios tio;
  if (tcgetattr(g_slave, &tio) != 0) return nullptr;
  cfmakeraw(&tio);
  if (tcsetattr(g_slave, TCSANOW, &tio) != 0) return nullptr;
  return g_path;
}

int ea_host_open_flash(const char *path, uint64_t bytes) {
  g_flash_bytes = bytes;
  if (path == nullptr) {
    void *p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) return -1;
    g_flash = static_cast<uint8_t *>(p);
    return 0;
  }
  g_flash_fd = open(path, O_RDWR | O_CREAT, 0644);
  if (g_flash_fd < 0) return -1;
  struct stat st;
  if (fstat(g_flash_fd, &st) != 0) return -1;
  // A new (sparse, zero) file reads as a blank flash: no valid manifest, nothing staged.
  if (static_cast<uint64_t>(st.st_size) < bytes && ftruncate(g_flash_fd, static_cast<off_t>(bytes)) != 0)
    return -1;
  // Shared: every write is in the page cache at once, so a kill -9 loses nothing written.
  void *p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, g_flash_fd, 0);
  if (p == MAP_FAILED) return -1;
  g_flash = static_cast<uint8_t *>(p);
  return 0;
}

void ea_host_close(void) {
  if (g_flash != nullptr) munmap(g_flash, g_flash_bytes);
  if (g_flash_fd >= 0) close(g_flash_fd);
  if (g_slave >= 0) close(g_slave);
  if (g_master >= 0) close(g_master);
}

extern "C" {

int32_t ea_hal_uart_read(uint8_t *buf, size_t cap, uint32_t timeout_ms) {
  struct pollfd pfd = {g_master, POLLIN, 0};
  int rc = poll(&pfd, 1, static_cast<int>(timeout_ms));
  if (rc < 0) return errno == EINTR ? 0 : -1;
  if (rc == 0) return 0;
  ssize_t n = read(g_master, buf, cap);
  if (n < 0) return (errno == EINTR || errno == EAGAIN || errno == EIO) ? 0 : -1;
  return static_cast<int32_t>(n);
}

int ea_hal_uart_write(const uint8_t *buf, size_t len) {
  while (len > 0) {
    struct pollfd pfd = {g_master, POLLOUT, 0};
    if (poll(&pfd, 1, 2000) <= 0) return -1;  // nobody reads the other end: lost, as on a UART
    ssize_t n = write(g_master, buf, len);
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      return -1;
    }
    buf += n;
    len -= static_cast<size_t>(n);
  }
  return 0;
}

void ea_hal_uart_discard(void) {
  uint8_t sink[4096];
  struct pollfd pfd = {g_master, POLLIN, 0};
  while (poll(&pfd, 1, 0) > 0 && read(g_master, sink, sizeof sink) > 0) {
  }
}

const uint8_t *ea_hal_flash_base(void) { return g_flash; }
uint32_t ea_hal_flash_size(void) { return g_flash_bytes > 0xFFFFFFFFu ? 0xFFFFFFFFu : static_cast<uint32_t>(g_flash_bytes); }
uint32_t ea_hal_flash_sector(void) { return kSector; }

int ea_hal_flash_erase(uint32_t offset, uint32_t len) {
  if (offset % kSector || len % kSector || static_cast<uint64_t>(offset) + len > g_flash_bytes) return -1;
  memset(g_flash + offset, 0xFF, len);
  return 0;
}

int ea_hal_flash_write(uint32_t offset, const void *data, uint32_t len) {
  if (static_cast<uint64_t>(offset) + len > g_flash_bytes) return -1;
  memcpy(g_flash + offset, data, len);
  return 0;
}

uint32_t ea_hal_clock_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint32_t>(ts.tv_sec * 1000ull + ts.tv_nsec / 1000000);
}

uint32_t ea_hal_random_u32(void) {
  static int fd = -1;
  uint32_t v = 0;
  if (fd < 0) fd = open("/dev/urandom", O_RDONLY);
  if (fd < 0 || read(fd, &v, sizeof v) != sizeof v) v = ea_hal_clock_ms() * 2654435761u;
  return v;
}

uint32_t ea_hal_memory(ea_hal_memory_t *out) {
  *out = ea_hal_memory_t{};
  return 0;  // a process: the OS sizes its stack and maps its image; nothing fixed to report
}

}  // extern "C"
