/*
 * flash_store.h -- what the device keeps in flash: the committed programs and adapter, one
 * staged upload, and the last upload's outcome (docs/bridge-protocol.md §3.6, §3.7).
 *
 * Layout (offsets from the HAL's flash base, sector-aligned):
 *   manifest A | manifest B | staging log | data area (twice the advertised flash)
 * A manifest record names every target's extent in the data area, the staged upload and the
 * last outcome, under a sequence number and a CRC-32. A change writes a whole new record into
 * the older of the two manifest sectors: a power cut mid-write leaves a record whose CRC
 * fails, and boot takes the other one. So a commit -- the staged extent becomes the target's,
 * the staging and the outcome change with it -- lands whole or not at all.
 * Staged bytes go straight into a free extent; after each chunk a u32 (bytes staged) is
 * appended to the staging log, so boot knows how far the upload got without a manifest
 * write per chunk. The data area is twice the advertised flash so the old program stays
 * intact (and active) while the new one is staged next to it.
 */
#ifndef EA_FLASH_STORE_H
#define EA_FLASH_STORE_H

#include <stdint.h>

namespace ea {

enum Target : uint8_t { kProgram = 0, kAdapter = 1, kTraining = 2, kInput = 3 };
constexpr int kFlashTargets = 3;  // PROGRAM, ADAPTER, TRAINING live in flash; INPUT in RAM

enum UploadState : uint8_t { kNone = 0, kStaging = 1, kCommitted = 2, kRefused = 3 };

struct Extent {
  uint32_t offset, size, crc;
  uint8_t present;
};

struct Outcome {
  uint8_t state, target;
  uint32_t size, crc, request_id;
  uint16_t code;
  uint32_t arg;
};

struct Staging {
  uint8_t present, target;
  uint32_t size, crc, offset;
  uint32_t base_len;  // bytes staged when the log was last folded into the manifest
};

struct Manifest {
  uint32_t magic, version, seq;
  Extent targets[kFlashTargets];
  Outcome outcome;
  Staging staging;
  uint32_t crc;  // CRC-32 of everything above
};

class FlashStore {
 public:
  // Read the manifest and staging log; `capacity` is the flash advertised to the host.
  // Returns 0, or -1 when the HAL's flash is too small for the layout.
  int boot(uint32_t capacity);

  const uint8_t *active(int target, uint32_t *size) const;  // nullptr when none
  uint32_t active_crc(int target) const;
  uint32_t active_size(int target) const;
  const Outcome &outcome() const { return m_.outcome; }

  const Staging &staging() const { return m_.staging; }
  uint32_t staged_len() const { return staged_len_; }
  const uint8_t *staged_data() const;

  // Begin a new staged upload of a flash target (dropping any other); the outcome becomes
  // `o` in the same record. Returns 0, or -1 when no free extent of `size` bytes exists.
  int stage_begin(uint8_t target, uint32_t size, uint32_t crc, const Outcome &o);
  int stage_append(const uint8_t *data, uint32_t len);
  int stage_drop();
  // The staged bytes become `target`'s (erasing the adapter too when `drop_adapter`), the
  // staging ends and the outcome is `o`: one manifest write.
  int activate_staged(bool drop_adapter, const Outcome &o);
  int set_outcome(const Outcome &o);

 private:
  int write_manifest();
  int allocate(uint32_t size, uint32_t *offset) const;
  int log_append(uint32_t value);

  Manifest m_{};
  int slot_ = 1;  // manifest sector holding m_ (the next write goes to the other)
  uint32_t sector_ = 4096, log_off_ = 0, log_len_ = 0, data_off_ = 0, data_len_ = 0;
  uint32_t log_used_ = 0, staged_len_ = 0;
};

}  // namespace ea

#endif  // EA_FLASH_STORE_H
