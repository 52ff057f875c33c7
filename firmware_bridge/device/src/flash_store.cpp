// flash_store.cpp -- see flash_store.h for the layout and why a commit is atomic.
#include "flash_store.h"

#include <string.h>

#include "edgeadapt_frame.h"
#include "hal.h"

namespace ea {
namespace {

constexpr uint32_t kMagic = 0x4D464145u;  // "EAFM"
constexpr uint32_t kVersion = 1;
constexpr uint32_t kLogSectors = 4;
constexpr uint32_t kErased = 0xFFFFFFFFu;

uint32_t round_up(uint32_t n, uint32_t to) { return (n + to - 1) / to * to; }

uint32_t manifest_crc(const Manifest &m) {
  return ea_crc32_update(0, reinterpret_cast<const uint8_t *>(&m), offsetof(Manifest, crc));
}

bool valid(const Manifest &m) {
  return m.magic == kMagic && m.version == kVersion && m.crc == manifest_crc(m);
}

}  // namespace

int FlashStore::boot(uint32_t capacity) {
  sector_ = ea_hal_flash_sector();
  log_off_ = 2 * sector_;
  log_len_ = kLogSectors * sector_;
  data_off_ = log_off_ + log_len_;
  data_len_ = 2 * round_up(capacity, sector_);
  if (static_cast<uint64_t>(data_off_) + data_len_ > ea_hal_flash_size()) return -1;
  Manifest a, b;
  memcpy(&a, ea_hal_flash_base(), sizeof a);
  memcpy(&b, ea_hal_flash_base() + sector_, sizeof b);
  bool va = valid(a), vb = valid(b);
  memset(&m_, 0, sizeof m_);
  slot_ = 1;  // a blank flash: the first write goes to A
  if (va && (!vb || a.seq >= b.seq)) {
    m_ = a;
    slot_ = 0;
  } else if (vb) {
    m_ = b;
    slot_ = 1;
  }
  // How far the staged upload got: the last entry of the log, else the manifest's base.
  const uint32_t *log = reinterpret_cast<const uint32_t *>(ea_hal_flash_base() + log_off_);
  log_used_ = 0;
  staged_len_ = m_.staging.base_len;
  while (log_used_ < log_len_ / 4 && log[log_used_] != kErased) {
    staged_len_ = log[log_used_++];
  }
  if (!m_.staging.present) staged_len_ = 0;
  else if (staged_len_ > m_.staging.size) staged_len_ = m_.staging.size;
  return 0;
}

const uint8_t *FlashStore::active(int target, uint32_t *size) const {
  const Extent &e = m_.targets[target];
  if (!e.present) return nullptr;
  if (size) *size = e.size;
  return ea_hal_flash_base() + data_off_ + e.offset;
}

uint32_t FlashStore::active_crc(int target) const {
  return m_.targets[target].present ? m_.targets[target].crc : 0;
}

uint32_t FlashStore::active_size(int target) const {
  return m_.targets[target].present ? m_.targets[target].size : 0;
}

const uint8_t *FlashStore::staged_data() const {
  return ea_hal_flash_base() + data_off_ + m_.staging.offset;
}

int FlashStore::write_manifest() {
  m_.magic = kMagic;
  m_.version = kVersion;
  m_.seq += 1;
  m_.crc = manifest_crc(m_);
  int next = 1 - slot_;
  uint32_t at = static_cast<uint32_t>(next) * sector_;
  if (ea_hal_flash_erase(at, sector_) != 0) return -1;
  if (ea_hal_flash_write(at, &m_, sizeof m_) != 0) return -1;
  slot_ = next;
  return 0;
}

// First fit between the extents in use (every target's, old ones included: they stay
// active until the commit), sector-aligned so each extent erases on its own.
int FlashStore::allocate(uint32_t size, uint32_t *offset) const {
  uint32_t starts[kFlashTargets], ends[kFlashTargets];
  int n = 0;
  for (const Extent &e : m_.targets) {
    if (!e.present) continue;
    int i = n++;
    while (i > 0 && starts[i - 1] > e.offset) {
      starts[i] = starts[i - 1];
      ends[i] = ends[i - 1];
      --i;
    }
    starts[i] = e.offset;
    ends[i] = e.offset + round_up(e.size, sector_);
  }
  uint32_t need = round_up(size, sector_), at = 0;
  for (int i = 0; i <= n; ++i) {
    uint32_t gap_end = i < n ? starts[i] : data_len_;
    if (gap_end >= at && gap_end - at >= need) {
      *offset = at;
      return 0;
    }
    if (i < n && ends[i] > at) at = ends[i];
  }
  return -1;
}

int FlashStore::stage_begin(uint8_t target, uint32_t size, uint32_t crc, const Outcome &o) {
  if (m_.staging.present && stage_drop() != 0) return -2;  // never erase under a live record
  uint32_t offset = 0;
  if (allocate(size, &offset) != 0) return -1;
  if (ea_hal_flash_erase(log_off_, log_len_) != 0) return -2;
  if (size && ea_hal_flash_erase(data_off_ + offset, round_up(size, sector_)) != 0) return -2;
  log_used_ = 0;
  staged_len_ = 0;
  m_.staging = Staging{1, target, size, crc, offset, 0};
  m_.outcome = o;
  return write_manifest() == 0 ? 0 : -2;
}

int FlashStore::log_append(uint32_t value) {
  if (log_used_ == log_len_ / 4) {  // full: fold it into the manifest and start over
    m_.staging.base_len = value;
    if (write_manifest() != 0 || ea_hal_flash_erase(log_off_, log_len_) != 0) return -1;
    log_used_ = 0;
    return 0;
  }
  if (ea_hal_flash_write(log_off_ + 4 * log_used_, &value, 4) != 0) return -1;
  log_used_ += 1;
  return 0;
}

int FlashStore::stage_append(const uint8_t *data, uint32_t len) {
  if (!m_.staging.present || staged_len_ + len > m_.staging.size) return -1;
  // Data first, then the log entry: a logged length always has its bytes behind it.
  if (len && ea_hal_flash_write(data_off_ + m_.staging.offset + staged_len_, data, len) != 0)
    return -1;
  staged_len_ += len;
  return log_append(staged_len_);
}

int FlashStore::stage_drop() {
  if (!m_.staging.present) return 0;
  memset(&m_.staging, 0, sizeof m_.staging);
  staged_len_ = 0;
  return write_manifest();
}

int FlashStore::activate_staged(bool drop_adapter, const Outcome &o) {
  const Staging s = m_.staging;
  if (!s.present || s.target >= kFlashTargets) return -1;
  m_.targets[s.target] = Extent{s.offset, s.size, s.crc, 1};
  if (drop_adapter) memset(&m_.targets[kAdapter], 0, sizeof(Extent));
  memset(&m_.staging, 0, sizeof m_.staging);
  m_.outcome = o;
  staged_len_ = 0;
  return write_manifest();
}

int FlashStore::set_outcome(const Outcome &o) {
  m_.outcome = o;
  return write_manifest();
}

}  // namespace ea
