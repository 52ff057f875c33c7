// server.cpp -- see server.h. Every buffer is static; handlers return false with a Refusal
// (the ERROR reply) instead of throwing.
#include "server.h"

#include <string.h>

#include <initializer_list>

#include "edgeadapt_frame.h"
#include "flash_store.h"
#include "hal.h"
#include "programs.h"

#ifndef EA_REPLY_ARENA_BYTES
#define EA_REPLY_ARENA_BYTES (1u << 20)
#endif
#ifndef EA_INPUT_MAX_BYTES
#define EA_INPUT_MAX_BYTES (16u << 20)
#endif
#ifndef EA_STREAM_MAX_BYTES
#define EA_STREAM_MAX_BYTES (16u << 20)
#endif

namespace ea {
namespace {

// Message types (docs §4).
enum : uint8_t {
  kHello = 0x01, kUploadBegin = 0x02, kUploadChunk = 0x03, kUploadCommit = 0x04, kInfer = 0x05,
  kAdapt = 0x06, kStreamStart = 0x07, kStreamFrame = 0x08, kStreamStop = 0x09,
  kGetAdapter = 0x0A, kGetStats = 0x0B, kReset = 0x0C, kGetUpload = 0x0D, kGetMemory = 0x0E,
  kDeviceInfo = 0x81, kUploadStatus = 0x82, kInferResult = 0x85, kAdaptResult = 0x86,
  kStreamCredit = 0x87, kStreamResult = 0x88, kAdapterChunk = 0x8A, kStats = 0x8B,
  kUploadOutcome = 0x8D, kMemory = 0x8E, kAck = 0xF0, kNak = 0xF1, kInProgress = 0xF2, kError = 0xFF,
};
constexpr uint8_t kVersion = EA_PROTOCOL_VERSION;
constexpr uint8_t kRetry = 0x01;
constexpr int kRecords = 16;
constexpr int kMaxBatch = 256;
constexpr uint32_t kMaxWindow = 8;
constexpr uint32_t kCapabilities = 0x3F;  // UPLOAD, INFER, ADAPT, STREAM, ADAPTER_IO, MEMORY_REPORT
enum Counter { kUptime, kFramesRx, kFramesTx, kCrcErrors, kFramingErrors, kNaksSent,
               kDuplicates, kInferCount, kAdaptSteps, kCounters };

// -- little-endian fields --------------------------------------------------------------------

uint32_t rd32(const uint8_t *p) { return p[0] | p[1] << 8 | p[2] << 16 | static_cast<uint32_t>(p[3]) << 24; }
uint16_t rd16(const uint8_t *p) { return static_cast<uint16_t>(p[0] | p[1] << 8); }

struct Writer {
  uint8_t *buf;
  uint32_t cap, len = 0;
  void u8(uint32_t v) { if (len < cap) buf[len] = static_cast<uint8_t>(v); ++len; }
  void u16(uint32_t v) { u8(v); u8(v >> 8); }
  void u32(uint32_t v) { u16(v); u16(v >> 16); }
  void f32(float v) { uint32_t u; memcpy(&u, &v, 4); u32(u); }
  void bytes(const void *p, uint32_t n) {
    if (len + n <= cap) memcpy(buf + len, p, n);
    len += n;
  }
};

// -- state ----------------------------------------------------------------------------------

ServerConfig g_cfg;
FlashStore g_flash;
Programs g_programs;

uint8_t g_rx_buf[EA_MAX_ENCODED(EA_MAX_PAYLOAD)];
ea_rx g_rx;
uint8_t g_io[4096];
uint8_t g_body[EA_MAX_PAYLOAD + 16];     // one message being built (no envelope)
uint8_t g_payload[EA_MAX_PAYLOAD + 16];  // envelope + message
uint8_t g_wire[EA_WIRE_BOUND(EA_MAX_PAYLOAD)];
uint8_t g_arena[2][EA_REPLY_ARENA_BYTES];  // reply frames of a request; one is the cache
uint8_t g_input[EA_INPUT_MAX_BYTES];       // staged INPUT (RAM)
float g_samples[EA_STREAM_MAX_BYTES / sizeof(float)];

struct Cache { bool valid; uint16_t seq; uint8_t type; uint32_t digest; int arena; uint32_t len; };
struct Record { uint32_t rid, digest; uint8_t type; uint16_t len; uint8_t body[EA_MAX_PAYLOAD]; };
struct Queued { uint16_t seq; uint32_t frame_id; };

struct State {
  uint32_t boot_id, session, born_ms, step;
  uint16_t negotiated;
  uint32_t counts[kCounters];
  Cache cache;
  int arena;         // where the request being served puts its replies
  uint32_t arena_len;
  bool arena_overflow;
  uint8_t last_type;  // the last reply to the request being served (for its record)
  uint16_t last_len;
  uint8_t last_body[EA_MAX_PAYLOAD];
  bool busy;
  uint16_t busy_seq;
  uint32_t busy_since;
  bool reboot_pending;
  // One staged upload at a time: a flash target in g_flash, or INPUT here.
  bool ram_staged;
  uint32_t ram_size, ram_crc, ram_len;
  uint32_t input_len;
  bool input_valid;
  // Stream.
  bool stream_open, stream_adapt;
  uint32_t credits, stream_batch, queued, sample_numel;
  Queued queue[kMaxBatch];
};
State g;
Record g_records[kRecords];
int g_n_records, g_next_record;

// -- frames ---------------------------------------------------------------------------------

bool enveloped(uint8_t type) { return type != kHello && type != kDeviceInfo; }

// Encode one frame (sealed with the session) into `out`; returns its length, 0 on failure.
uint32_t encode(uint8_t type, uint16_t seq, const uint8_t *body, uint32_t len, uint8_t *out, uint32_t cap) {
  uint32_t n = 0;
  if (enveloped(type)) {
    uint32_t s = g.session;
    memcpy(g_payload, &s, 4);  // little-endian host and target
    n = 4;
  }
  if (n + len > sizeof g_payload) return 0;
  memcpy(g_payload + n, body, len);
  n += len;
  ea_frame f{kVersion, type, 0, seq, static_cast<uint16_t>(n), g_payload};
  size_t out_len = 0;
  if (ea_frame_encode(&f, EA_MAX_PAYLOAD, out, cap, &out_len) != EA_OK) return 0;
  g.counts[kFramesTx] += 1;
  return static_cast<uint32_t>(out_len);
}

// A reply to the request being served: into its arena (sent, and maybe cached, after).
void reply(uint8_t type, uint16_t seq, const uint8_t *body, uint32_t len) {
  uint8_t *at = g_arena[g.arena] + g.arena_len;
  uint32_t n = encode(type, seq, body, len, at, EA_REPLY_ARENA_BYTES - g.arena_len);
  if (n == 0) {
    g.arena_overflow = true;
    return;
  }
  g.arena_len += n;
  g.last_type = type;
  g.last_len = static_cast<uint16_t>(len);
  memcpy(g.last_body, body, len);
}

void reply_error(const Refusal &r, uint16_t seq) {
  Writer w{g_body, sizeof g_body};
  w.u16(r.code);
  w.u32(r.arg);
  w.bytes(r.text, static_cast<uint32_t>(strlen(r.text)));
  reply(kError, seq, g_body, w.len);
}

void send_now(uint8_t type, uint16_t seq, const uint8_t *body, uint32_t len) {
  uint32_t n = encode(type, seq, body, len, g_wire, sizeof g_wire);
  if (n) ea_hal_uart_write(g_wire, n);
}

// IN_PROGRESS for the request running: "my next frame comes within estimate_ms".
void progress(uint32_t estimate_ms) {
  if (!g.busy) return;
  Writer w{g_body, sizeof g_body};
  w.u32(ea_hal_clock_ms() - g.busy_since);
  w.u32(estimate_ms);
  uint8_t body[8];
  memcpy(body, g_body, 8);
  send_now(kInProgress, g.busy_seq, body, 8);
}

// Seconds a commit may take before its first run was measured, as the emulator guesses.
uint32_t load_estimate_ms(int target, uint32_t size) {
  double per_mb = target == kTraining ? 8.0 : 2.0;
  return static_cast<uint32_t>((1.0 + per_mb * size / 1e6) * 1000 * g_cfg.slowdown);
}

// Before a run that keeps the device from sending for longer than half a keep-alive period.
void announce(int target) {
  uint32_t ms = static_cast<uint32_t>(g_programs.run_ms(target) * g_cfg.slowdown);
  if (!ms) ms = load_estimate_ms(target, g_programs.size(target));
  if (g_cfg.keepalive_ms && ms * 2 > g_cfg.keepalive_ms) progress(2 * ms + 100);
}

// -- RAM state --------------------------------------------------------------------------------

const uint8_t *committed_adapter(uint32_t *len) {
  return g_flash.active(kAdapter, len);
}

bool reset_adapter(Refusal *r) {
  uint32_t len = 0;
  const uint8_t *blob = committed_adapter(&len);
  g.step = 0;
  return g_programs.reset_state(blob, len, r);
}

void power_on() {
  g_programs.unload_all();
  Refusal r;
  for (int target : {kProgram, kTraining}) {
    uint32_t size = 0;
    const uint8_t *data = g_flash.active(target, &size);
    if (data == nullptr) continue;
    // Checked at commit; a boot only loads it (a program that no longer loads is skipped).
    if (g_programs.load_candidate(target, data, size, false, &r)) g_programs.activate(target, nullptr, 0, &r);
  }
  uint32_t cur_boot = g.boot_id;
  memset(&g, 0, sizeof g);
  g.boot_id = cur_boot;
  g.negotiated = g_cfg.max_payload;
  g.born_ms = ea_hal_clock_ms();
  g_n_records = g_next_record = 0;
  uint32_t len = 0;
  const uint8_t *blob = committed_adapter(&len);
  if (blob != nullptr && g_programs.has_training_params() && !g_programs.check_adapter(blob, len, false, &r))
    blob = nullptr;  // an adapter that does not fit the program: start from the program's own
  g_programs.reset_state(blob, len, &r);
}

uint32_t nonzero_random() {
  uint32_t v = 0;
  while (v == 0) v = ea_hal_random_u32();
  return v;
}

void reboot() {
  g.boot_id = nonzero_random();
  power_on();
  ea_rx_init(&g_rx, g_rx_buf, sizeof g_rx_buf, g_cfg.max_payload);
  ea_hal_uart_discard();
}

// -- uploads ----------------------------------------------------------------------------------

bool flash_staged() { return g_flash.staging().present != 0; }
bool any_staged() { return flash_staged() || g.ram_staged; }
uint8_t staged_target() { return g.ram_staged ? static_cast<uint8_t>(kInput) : g_flash.staging().target; }
uint32_t staged_size() { return g.ram_staged ? g.ram_size : g_flash.staging().size; }
uint32_t staged_crc() { return g.ram_staged ? g.ram_crc : g_flash.staging().crc; }
uint32_t staged_len() { return g.ram_staged ? g.ram_len : g_flash.staged_len(); }
const uint8_t *staged_bytes() { return g.ram_staged ? g_input : g_flash.staged_data(); }

void drop_staging() {
  g.ram_staged = false;
  g_flash.stage_drop();
}

Outcome outcome_of(uint8_t state, uint32_t request_id = 0, uint16_t code = 0, uint32_t arg = 0) {
  return Outcome{state, staged_target(), staged_size(), staged_crc(), request_id, code, arg};
}

void reply_status(uint16_t seq) {
  Writer w{g_body, sizeof g_body};
  w.u8(staged_target());
  w.u32(staged_len());
  w.u32(staged_size());
  reply(kUploadStatus, seq, g_body, w.len);
}

uint32_t raw_size(const Shape &s) { return static_cast<uint32_t>(4 * s.numel()); }

bool on_upload_begin(const uint8_t *m, uint16_t seq, Refusal *r) {
  uint8_t target = m[0];
  uint32_t size = rd32(m + 1), crc = rd32(m + 5);
  if (target > kInput) return refuse(r, kBadArgument, target, "unknown upload target");
  uint32_t limit;
  if (target == kInput) {
    limit = 0;
    for (int t : {kProgram, kTraining})
      if (g_programs.loaded(t) && raw_size(g_programs.input_shape(t)) > limit) limit = raw_size(g_programs.input_shape(t));
    if (!limit) return refuse(r, kNotReady, 0, "upload a program before staging an input");
    if (limit > EA_INPUT_MAX_BYTES) limit = EA_INPUT_MAX_BYTES;
  } else {
    uint32_t stored = 0;
    for (int t = 0; t < kFlashTargets; ++t)
      if (t != target) stored += g_flash.active_size(t);
    uint32_t flash = profile_flash_bytes(*g_cfg.profile);
    limit = flash > stored ? flash - stored : 0;
  }
  if (size > limit) return refuse(r, kTooLarge, limit, "%u B do not fit: %u B free", size, limit);
  bool resume = any_staged() && staged_target() == target && staged_size() == size && staged_crc() == crc;
  if (!resume) {  // not a resume: any other staging goes, a new one starts
    Outcome o{kStaging, target, size, crc, 0, 0, 0};
    if (target == kInput) {
      g_flash.stage_drop();
      g.ram_staged = true;
      g.ram_size = size, g.ram_crc = crc, g.ram_len = 0;
      g_flash.set_outcome(o);
    } else {
      g.ram_staged = false;
      int rc = g_flash.stage_begin(target, size, crc, o);
      if (rc == -1) return refuse(r, kTooLarge, limit, "no free flash extent of %u B", size);
      if (rc != 0) return refuse(r, kInternal, 0, "flash write failed");
    }
  }
  reply_status(seq);
  return true;
}

bool on_upload_chunk(const uint8_t *m, uint32_t len, uint16_t seq, Refusal *r) {
  if (!any_staged()) return refuse(r, kUploadNotStarted, 0, "send UPLOAD_BEGIN first");
  uint32_t offset = rd32(m), n = len - 4;
  if (offset == staged_len()) {  // any other offset: just tell the host where we are
    if (staged_len() + n > staged_size())
      return refuse(r, kBadArgument, staged_size(), "chunk runs past the announced size");
    if (g.ram_staged) {
      memcpy(g_input + g.ram_len, m + 4, n);
      g.ram_len += n;
    } else if (g_flash.stage_append(m + 4, n) != 0) {
      return refuse(r, kInternal, 0, "flash write failed");
    }
  }
  reply_status(seq);
  return true;
}

bool activate(uint8_t target, const Outcome &done, Refusal *r) {
  const uint8_t *data = g_flash.staged_data();
  uint32_t size = g_flash.staging().size;
  if (target == kAdapter) {
    if (!g_programs.check_adapter(data, size, false, r)) return false;
    if (g_flash.activate_staged(false, done) != 0) return refuse(r, kInternal, 0, "flash write failed");
    return reset_adapter(r);
  }
  progress(load_estimate_ms(target, size));
  if (!g_programs.load_candidate(target, data, size, true, r)) return false;
  bool drop_adapter = false;
  uint32_t alen = 0;
  const uint8_t *adapter = nullptr;
  if (target == kTraining) {  // the adapter stays if it fits the new program
    adapter = committed_adapter(&alen);
    Refusal ignored;
    if (adapter != nullptr && !g_programs.check_adapter(adapter, alen, true, &ignored)) {
      drop_adapter = true;
      adapter = nullptr;
    }
  }
  if (g_flash.activate_staged(drop_adapter, done) != 0) return refuse(r, kInternal, 0, "flash write failed");
  if (!g_programs.activate(target, adapter, alen, r)) return false;
  if (target == kTraining) g.step = 0;
  return true;
}

bool on_upload_commit(const uint8_t *m, uint16_t seq, Refusal *r) {
  uint8_t target = m[0];
  uint32_t crc = rd32(m + 1), request_id = rd32(m + 5);
  const Outcome &done = g_flash.outcome();
  if (request_id && done.request_id == request_id && done.state != kNone) {  // settled before
    if (done.state == kCommitted) {
      reply(kAck, seq, nullptr, 0);
      return true;
    }
    return refuse(r, done.code, done.arg, "this commit was refused before");
  }
  if (!any_staged()) return refuse(r, kUploadNotStarted, 0, "send UPLOAD_BEGIN first");
  if (staged_target() != target) return refuse(r, kUploadNotStarted, staged_target(), "staged upload has another target");
  if (staged_len() != staged_size()) return refuse(r, kUploadIncomplete, staged_len(), "upload incomplete");
  if (target != kInput && g.stream_open)
    return refuse(r, kBusy, 0, "a stream is open: STREAM_STOP before changing programs");
  uint32_t actual = ea_crc32_update(0, staged_bytes(), staged_len());
  bool ok;
  Outcome committed = outcome_of(kCommitted, request_id);
  if (actual != crc || crc != staged_crc()) {  // bad bytes are never kept, let alone active
    ok = refuse(r, kCrcMismatch, actual, "CRC mismatch; upload again");
  } else if (target == kInput) {
    g.input_len = g.ram_len;
    g.input_valid = true;
    g.ram_staged = false;
    g_flash.set_outcome(committed);
    ok = true;
  } else {
    ok = activate(target, committed, r);
  }
  if (!ok) {  // the staging is gone either way; the flash says why
    Outcome refused = outcome_of(kRefused, request_id, r->code, r->arg);
    drop_staging();
    g_flash.set_outcome(refused);
    return false;
  }
  reply(kAck, seq, nullptr, 0);
  return true;
}

bool on_get_upload(uint16_t seq) {
  const Outcome &o = g_flash.outcome();
  uint32_t offset = o.state == kCommitted ? o.size : 0;
  if (o.state == kStaging && any_staged()) offset = staged_len();
  Writer w{g_body, sizeof g_body};
  w.u8(o.state);
  w.u8(o.target);
  w.u32(o.size);
  w.u32(o.crc);
  w.u32(offset);
  w.u32(o.request_id);
  w.u16(o.code);
  w.u32(o.arg);
  reply(kUploadOutcome, seq, g_body, w.len);
  return true;
}

// -- tensors ------------------------------------------------------------------------------------

// Decode a raw or u8-affine tensor of `shape` into dst (docs §4 "Tensor payloads"); the
// u8-affine values are q * scale + offset in two float roundings, as the emulator's torch.
bool decode(const uint8_t *data, uint32_t len, const Shape &shape, float *dst, Refusal *r) {
  size_t numel = shape.numel();
  uint32_t c = static_cast<uint32_t>(shape.channels());
  if (len == 4 * numel) {
    memcpy(dst, data, len);
    return true;
  }
  if (len == 8 * c + numel) {
    size_t inner = 1;
    for (int d = 2; d < shape.ndim; ++d) inner *= static_cast<size_t>(shape.dims[d]);
    const uint8_t *q = data + 8 * c;
    for (size_t i = 0; i < numel; ++i) {
      size_t ch = shape.ndim > 1 ? (i / inner) % c : 0;
      float scale, offset;
      memcpy(&scale, data + 8 * ch, 4);
      memcpy(&offset, data + 8 * ch + 4, 4);
      float v = static_cast<float>(q[i]) * scale;
      dst[i] = v + offset;
    }
    return true;
  }
  return refuse(r, kBadArgument, static_cast<uint32_t>(4 * numel), "MessageError: input of %u bytes "
                "fits neither layout: raw float32 is %lu bytes, u8-affine %lu", len,
                static_cast<unsigned long>(4 * numel), static_cast<unsigned long>(8 * c + numel));
}

bool input_data(const uint8_t **data, uint32_t *len, Refusal *r) {
  if (*len) return true;
  if (!g.input_valid) return refuse(r, kNotReady, 0, "empty input and no input staged (UPLOAD INPUT)");
  *data = g_input;
  *len = g.input_len;
  return true;
}

bool fits_reply(uint32_t bytes, uint32_t fixed, Refusal *r) {
  uint32_t limit = g.negotiated - 4 - fixed;
  if (bytes <= limit) return true;
  return refuse(r, kTooLarge, limit, "output of %u B exceeds a frame", bytes);
}

bool run_infer(Refusal *r, const float **out, size_t *numel) {
  announce(kProgram);
  g.counts[kInferCount] += 1;
  return g_programs.run_inference(r, out, numel);
}

bool run_step(Refusal *r, float *loss, const float **logits, size_t *numel) {
  announce(kTraining);
  if (!g_programs.run_step(r, loss, logits, numel)) return false;
  g.step += 1;
  g.counts[kAdaptSteps] += 1;
  return true;
}

bool on_infer(const uint8_t *m, uint32_t len, uint16_t seq, Refusal *r) {
  if (!g_programs.loaded(kProgram)) return refuse(r, kNotReady, 0, "upload an inference program first");
  const uint8_t *data = m + 4;
  uint32_t n = len - 4;
  const float *out;
  size_t numel;
  if (!input_data(&data, &n, r) || !decode(data, n, g_programs.input_shape(kProgram), g_programs.input(kProgram), r) ||
      !run_infer(r, &out, &numel) || !fits_reply(static_cast<uint32_t>(4 * numel), 4, r))
    return false;
  Writer w{g_body, sizeof g_body};
  w.u32(rd32(m));
  w.bytes(out, static_cast<uint32_t>(4 * numel));
  reply(kInferResult, seq, g_body, w.len);
  return true;
}

bool on_adapt(const uint8_t *m, uint32_t len, uint16_t seq, Refusal *r) {
  if (g.stream_open) return refuse(r, kBusy, 0, "a stream is open: STREAM_STOP before ADAPT");
  if (!g_programs.loaded(kTraining)) return refuse(r, kNotReady, 0, "upload a training program first");
  const uint8_t *data = m + 8;
  uint32_t n = len - 8;
  if (!input_data(&data, &n, r) || !decode(data, n, g_programs.input_shape(kTraining), g_programs.input(kTraining), r))
    return false;
  float loss;
  const float *logits;
  size_t numel;
  if (!run_step(r, &loss, &logits, &numel) || !fits_reply(static_cast<uint32_t>(4 * numel), 16, r)) return false;
  Writer w{g_body, sizeof g_body};
  w.u32(rd32(m));
  w.u32(rd32(m + 4));
  w.u32(g.step);
  w.f32(loss);
  w.bytes(logits, static_cast<uint32_t>(4 * numel));
  reply(kAdaptResult, seq, g_body, w.len);
  return true;
}

// -- streams: frames are samples; the device runs a program batch at a time ---------------

bool on_stream_start(const uint8_t *m, uint16_t seq, Refusal *r) {
  if (g.stream_open) return refuse(r, kBusy, g.queued, "a stream is open: STREAM_STOP first");
  uint16_t window = rd16(m);
  bool adapt = m[2] != 0;
  int target = adapt ? kTraining : kProgram;
  if (!g_programs.loaded(target))
    return refuse(r, kNotReady, 0, "upload %s first", adapt ? "a training program" : "an inference program");
  const Shape &shape = g_programs.input_shape(target);
  uint32_t batch = static_cast<uint32_t>(shape.batch());
  if (window < batch)
    return refuse(r, kBadArgument, batch, "window must be at least the program's batch of %u", batch);
  if (batch > static_cast<uint32_t>(kMaxBatch) || shape.numel() * sizeof(float) > EA_STREAM_MAX_BYTES)
    return refuse(r, kTooLarge, kMaxBatch, "the program's batch exceeds this firmware's stream buffer");
  g.credits = window < (batch > kMaxWindow ? batch : kMaxWindow) ? window : (batch > kMaxWindow ? batch : kMaxWindow);
  g.stream_open = true;
  g.stream_adapt = m[2];
  g.stream_batch = batch;
  g.queued = 0;
  g.sample_numel = static_cast<uint32_t>(shape.numel() / (batch ? batch : 1));
  Writer w{g_body, sizeof g_body};
  w.u16(g.credits);
  reply(kStreamCredit, seq, g_body, w.len);
  return true;
}

// Run the queued samples as one batch: a training step when adapting and the batch is full;
// otherwise (a short last batch) a prediction by the inference program, padded by repeating
// samples. A batch that cannot run answers each of its frames ERROR.
void flush_stream() {
  uint32_t n = g.queued;
  if (!n) return;
  g.credits += n;
  Refusal r;
  bool ok = true, stepped = false;
  const float *out = nullptr;
  size_t numel = 0;
  int adapt_target = g.stream_adapt ? kTraining : kProgram;
  bool full = n == g.stream_batch;
  if (!g_programs.loaded(adapt_target)) {
    ok = refuse(&r, kNotReady, 0, "upload %s first", g.stream_adapt ? "a training program" : "an inference program");
  } else {
    int run = g.stream_adapt && full ? kTraining : kProgram;
    if (!g_programs.loaded(run)) {
      ok = refuse(&r, kNotReady, 0, "upload an inference program first");
    } else {
      const Shape &shape = g_programs.input_shape(run);
      uint32_t rows = static_cast<uint32_t>(shape.batch());
      if (shape.numel() != static_cast<size_t>(rows) * g.sample_numel) {
        ok = refuse(&r, kExecutionFailed, 0, "RuntimeError: the programs' input shapes differ");
      } else {
        float *x = g_programs.input(run);
        for (uint32_t i = 0; i < rows; ++i)
          memcpy(x + i * g.sample_numel, g_samples + (i % n) * g.sample_numel, g.sample_numel * sizeof(float));
        float loss;
        ok = run == kTraining ? run_step(&r, &loss, &out, &numel) : run_infer(&r, &out, &numel);
        stepped = run == kTraining;
        if (ok && rows) ok = fits_reply(static_cast<uint32_t>(4 * (numel / rows)), 7, &r);
        if (ok) numel /= rows;  // one row per sample
      }
    }
  }
  for (uint32_t i = 0; i < n; ++i) {
    if (!ok) {
      reply_error(r, g.queue[i].seq);
      continue;
    }
    Writer w{g_body, sizeof g_body};
    w.u32(g.queue[i].frame_id);
    w.u16(1);
    w.u8(stepped ? 1 : 0);
    w.bytes(out + i * numel, static_cast<uint32_t>(4 * numel));
    reply(kStreamResult, g.queue[i].seq, g_body, w.len);
  }
  g.queued = 0;
}

bool on_stream_frame(const uint8_t *m, uint32_t len, uint16_t seq, Refusal *r) {
  if (!g.stream_open) return refuse(r, kNotReady, 0, "no stream open");
  if (g.credits == 0) return refuse(r, kNoCredit, 0, "frame sent without credit");
  int target = g.stream_adapt ? kTraining : kProgram;
  if (!g_programs.loaded(target)) return refuse(r, kNotReady, 0, "upload a program first");
  if (len == 4) return refuse(r, kBadArgument, 0, "a stream frame needs data");
  Shape sample = g_programs.input_shape(target);
  sample.dims[0] = 1;
  if (!decode(m + 4, len - 4, sample, g_samples + g.queued * g.sample_numel, r)) return false;
  g.credits -= 1;
  g.queue[g.queued++] = Queued{seq, rd32(m)};
  if (g.queued >= g.stream_batch) flush_stream();
  return true;
}

bool on_stream_stop(uint16_t seq) {
  if (g.stream_open) flush_stream();
  g.stream_open = false;
  reply(kAck, seq, nullptr, 0);
  return true;
}

// -- the rest -----------------------------------------------------------------------------------

bool on_get_adapter(const uint8_t *m, uint16_t seq, Refusal *r) {
  const uint8_t *blob = nullptr;
  uint32_t len = 0;
  if (g_programs.has_training_params()) len = g_programs.adapter_blob(&blob);
  else blob = committed_adapter(&len);
  if (blob == nullptr) return refuse(r, kNoAdapter, 0, "no adapter set");
  uint32_t offset = rd32(m), max_len = rd16(m + 4);
  if (offset > len) return refuse(r, kBadArgument, len, "offset past the end");
  uint32_t n = g.negotiated - 4 - 12;
  if (max_len < n) n = max_len;
  if (n > len - offset) n = len - offset;
  Writer w{g_body, sizeof g_body};
  w.u32(len);
  w.u32(ea_crc32_update(0, blob, len));
  w.u32(offset);
  w.bytes(blob + offset, n);
  reply(kAdapterChunk, seq, g_body, w.len);
  return true;
}

bool on_get_stats(uint16_t seq) {
  g.counts[kUptime] = ea_hal_clock_ms() - g.born_ms;
  Writer w{g_body, sizeof g_body};
  for (uint32_t c : g.counts) w.u32(c);
  reply(kStats, seq, g_body, w.len);
  return true;
}

// MEMORY (docs §4): flags, then per role (PROGRAM, TRAINING) planned, method used / pool,
// temp peak / pool, then stack high-water / size, text, data, bss.
bool on_get_memory(uint16_t seq) {
  enum : uint32_t { kProgramFlag = 1, kTrainingFlag = 2, kRuntimeFlag = 4, kStackFlag = 8, kImageFlag = 16 };
  ProgramMemory pm[2] = {};
  ea_hal_memory_t hm{};
  uint32_t have = ea_hal_memory(&hm);
  uint32_t flags = kRuntimeFlag | (have & EA_HAL_MEMORY_STACK ? kStackFlag : 0) |
                   (have & EA_HAL_MEMORY_IMAGE ? kImageFlag : 0);
  if (g_programs.memory(kProgram, &pm[0])) flags |= kProgramFlag;
  if (g_programs.memory(kTraining, &pm[1])) flags |= kTrainingFlag;
  Writer w{g_body, sizeof g_body};
  w.u32(flags);
  for (const ProgramMemory &p : pm)
    for (uint32_t v : {p.planned, p.method_used, p.method_pool, p.temp_peak, p.temp_pool}) w.u32(v);
  for (uint32_t v : {hm.stack_high_water, hm.stack_size, hm.text_bytes, hm.data_bytes, hm.bss_bytes}) w.u32(v);
  reply(kMemory, seq, g_body, w.len);
  return true;
}

bool on_reset(const uint8_t *m, uint16_t seq, Refusal *r) {
  uint8_t kind = m[0];
  if (kind == 0) {
    if (g.stream_open) return refuse(r, kBusy, 0, "a stream is open: STREAM_STOP before RESET");
    if (!reset_adapter(r)) return false;
  } else if (kind == 1) {
    drop_staging();
    g.stream_open = false;
    g.queued = 0;
  } else if (kind != 2) {  // REBOOT: restart once the ACK is out
    return refuse(r, kBadArgument, kind, "unknown reset kind");
  }
  reply(kAck, seq, nullptr, 0);
  return true;
}

bool on_hello(const uint8_t *m, uint16_t seq, Refusal *r) {
  if (!(m[0] <= kVersion && kVersion <= m[1]))
    return refuse(r, kUnsupportedVersion, kVersion, "device speaks v%u", kVersion);
  uint16_t host_max = rd16(m + 2);
  if (host_max < 64) return refuse(r, kBadArgument, 64, "max_payload too small");
  g.negotiated = host_max < g_cfg.max_payload ? host_max : g_cfg.max_payload;
  g.stream_open = false;  // a new session; staged uploads survive so they can resume
  g.queued = 0;
  g.session = nonzero_random();
  const Profile &p = *g_cfg.profile;
  Writer w{g_body, sizeof g_body};
  w.u8(kVersion);
  w.u16(g.negotiated);
  w.u32(kCapabilities);
  w.u32(profile_ram_bytes(p));
  w.u32(profile_flash_bytes(p));
  w.u32(g_flash.active_crc(kProgram));
  w.u32(g_flash.active_crc(kTraining));
  w.u32(g_flash.active_crc(kAdapter));
  w.u32(g.step);
  w.u32(g.boot_id);
  w.u32(g.session);
  w.u16(g_cfg.keepalive_ms);
  size_t n = strlen(p.key);
  w.bytes(p.key, static_cast<uint32_t>(n > 32 ? 32 : n));
  reply(kDeviceInfo, seq, g_body, w.len);
  return true;
}

// Payload sizes (after the envelope): exact, or at least `min` for a message with a tail.
struct Layout { uint8_t type; uint8_t size; bool tail; };
constexpr Layout kLayouts[] = {
    {kHello, 8, false},        {kUploadBegin, 9, false}, {kUploadChunk, 4, true},
    {kUploadCommit, 9, false}, {kInfer, 4, true},        {kAdapt, 8, true},
    {kStreamStart, 3, false},  {kStreamFrame, 4, true},  {kStreamStop, 0, false},
    {kGetAdapter, 6, false},   {kGetStats, 0, false},    {kReset, 5, false},
    {kGetUpload, 0, false},    {kGetMemory, 0, false},
};

bool serve(uint8_t type, const uint8_t *m, uint32_t len, uint16_t seq, Refusal *r) {
  switch (type) {
    case kHello: return on_hello(m, seq, r);
    case kUploadBegin: return on_upload_begin(m, seq, r);
    case kUploadChunk: return on_upload_chunk(m, len, seq, r);
    case kUploadCommit: return on_upload_commit(m, seq, r);
    case kGetUpload: return on_get_upload(seq);
    case kInfer: return on_infer(m, len, seq, r);
    case kAdapt: return on_adapt(m, len, seq, r);
    case kStreamStart: return on_stream_start(m, seq, r);
    case kStreamFrame: return on_stream_frame(m, len, seq, r);
    case kStreamStop: return on_stream_stop(seq);
    case kGetAdapter: return on_get_adapter(m, seq, r);
    case kGetStats: return on_get_stats(seq);
    case kGetMemory: return on_get_memory(seq);
    case kReset: return on_reset(m, seq, r);
    default: return refuse(r, kUnknownMessage, type, "0x%02X is not a request", type);
  }
}

uint32_t request_id(uint8_t type, const uint8_t *m) {
  switch (type) {  // the non-idempotent requests' idempotency keys
    case kAdapt: return rd32(m + 4);
    case kUploadCommit: return rd32(m + 5);
    case kReset: return rd32(m + 1);
    default: return 0;
  }
}

// Execute one intact request into the current arena.
void execute(const ea_frame &f, const uint8_t *m, uint32_t len, uint32_t digest) {
  Refusal r;
  const Layout *layout = nullptr;
  for (const Layout &l : kLayouts) if (l.type == f.type) layout = &l;
  if (layout == nullptr) {
    refuse(&r, kUnknownMessage, f.type, "unknown message type 0x%02X", f.type);
    reply_error(r, f.seq);
    return;
  }
  if (len < layout->size || (!layout->tail && len != layout->size)) {
    refuse(&r, kMalformed, f.type, "payload is %u bytes, want %s%u", len, layout->tail ? "at least " : "", layout->size);
    reply_error(r, f.seq);
    return;
  }
  uint32_t rid = request_id(f.type, m);
  if (rid) {
    for (int i = 0; i < g_n_records; ++i) {
      const Record &rec = g_records[i];
      if (rec.rid != rid) continue;
      if (rec.digest != digest) {  // this request ran: its answer, not a second run
        refuse(&r, kIdReused, rid, "request id already used by another request");
        reply_error(r, f.seq);
      } else {
        g.counts[kDuplicates] += 1;
        reply(rec.type, f.seq, rec.body, rec.len);
      }
      return;
    }
  }
  g.busy = true;
  g.busy_seq = f.seq;
  g.busy_since = ea_hal_clock_ms();
  g.last_len = 0;
  bool ok = serve(f.type, m, len, f.seq, &r);
  if (!ok) reply_error(r, f.seq);
  g.busy = false;
  if (rid) {  // FIFO of the last kRecords answers
    Record &rec = g_records[g_next_record];
    g_next_record = (g_next_record + 1) % kRecords;
    if (g_n_records < kRecords) ++g_n_records;
    rec.rid = rid;
    rec.digest = digest;
    rec.type = g.last_type;
    rec.len = g.last_len;
    memcpy(rec.body, g.last_body, g.last_len);
  }
  if (f.type == kReset && m[0] == 2 && ok) g.reboot_pending = true;
}

void flush_arena() {
  if (g.arena_len) ea_hal_uart_write(g_arena[g.arena], g.arena_len);
}

void on_frame(const ea_frame &f) {
  g.counts[kFramesRx] += 1;
  if (f.type & 0x80) return;  // a device frame (a loop, another device): not a request
  // Replies go to the arena the cache does not hold.
  g.arena = g.cache.valid ? 1 - g.cache.arena : 0;
  g.arena_len = 0;
  g.arena_overflow = false;
  Refusal r;
  if (f.type != kHello && f.version != kVersion) {
    refuse(&r, kUnsupportedVersion, kVersion, "this session speaks v%u, the frame says v%u", kVersion, f.version);
    reply_error(r, f.seq);
    flush_arena();
    return;
  }
  const uint8_t *m = f.payload;
  uint32_t len = f.payload_len;
  if (enveloped(f.type)) {
    if (len < 4) {
      refuse(&r, kMalformed, f.type, "payload of %u bytes is too short for its session field", len);
      reply_error(r, f.seq);
      flush_arena();
      return;
    }
    uint32_t session = rd32(m);
    if (g.session == 0 || session != g.session) {
      refuse(&r, kNoSession, g.session, "request names session 0x%08x; %s", session,
             g.session ? "HELLO again" : "no session since boot: send HELLO");
      reply_error(r, f.seq);
      flush_arena();
      return;
    }
    m += 4;
    len -= 4;
  }
  uint8_t type = f.type;
  uint32_t digest = ea_crc32_update(ea_crc32_update(0, &type, 1), m, len);
  if ((f.flags & kRetry) && g.cache.valid && g.cache.seq == f.seq && g.cache.type == f.type &&
      g.cache.digest == digest) {  // a true retransmission: answer again, do not redo
    g.counts[kDuplicates] += 1;
    ea_hal_uart_write(g_arena[g.cache.arena], g.cache.len);
    return;
  }
  execute(f, m, len, digest);
  flush_arena();
  if (f.type == kHello) {
    g.cache.valid = false;  // a new session: the last answer is no retransmission's
  } else if (f.type != kStreamFrame) {
    g.cache = Cache{!g.arena_overflow, f.seq, f.type, digest, g.arena, g.arena_len};
  }
}

void on_bad_frame(int status) {
  uint8_t reason = 2;  // FRAMING: COBS, magic, length, short
  if (status == EA_ERR_CRC) {
    g.counts[kCrcErrors] += 1;
    reason = 1;
  } else {
    g.counts[kFramingErrors] += 1;
    if (status == EA_ERR_OVERSIZE) reason = 3;
  }
  g.counts[kNaksSent] += 1;
  send_now(kNak, 0, &reason, 1);  // seq unknown: the frame was unreadable
}

}  // namespace

int server_boot(const ServerConfig &config) {
  g_cfg = config;
  if (g_flash.boot(profile_flash_bytes(*config.profile)) != 0) return -1;
  g_programs.init(config.profile, config.lr);
  g.boot_id = nonzero_random();
  power_on();
  ea_rx_init(&g_rx, g_rx_buf, sizeof g_rx_buf, config.max_payload);
  return 0;
}

int server_poll(uint32_t timeout_ms) {
  int32_t n = ea_hal_uart_read(g_io, sizeof g_io, timeout_ms);
  if (n < 0) return -1;
  for (int32_t i = 0; i < n; ++i) {
    ea_frame f;
    int st = ea_rx_push(&g_rx, g_io[i], &f);
    if (st == EA_NEED_MORE) continue;
    if (st == EA_OK) on_frame(f);
    else on_bad_frame(st);
    if (g.reboot_pending) {  // a reboot loses what else was received
      reboot();
      return 0;
    }
  }
  return 0;
}

}  // namespace ea
