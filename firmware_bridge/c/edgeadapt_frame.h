/*
 * edgeadapt_frame.h -- reference frame codec of the edgeadapt bridge protocol v2.
 *
 * Portable C99, no malloc, no globals written: every function works in caller-provided
 * buffers, checks every bound and returns an ea_status. The wire format is specified in
 * docs/bridge-protocol.md; the Python package (edgeadapt.firmware_bridge) is the other
 * implementation, and test_vectors.txt (from gen_vectors.py) keeps the two in step.
 *
 * On the wire a frame is: 0x00, COBS(header[8] | payload | CRC-32[4]), 0x00.
 * Header (little-endian): magic 0xEA, version, type, flags, seq u16, payload_len u16.
 * CRC-32 is IEEE 802.3 (zlib.crc32) over header and payload.
 */
#ifndef EDGEADAPT_FRAME_H
#define EDGEADAPT_FRAME_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define EA_MAGIC 0xEAu
#define EA_PROTOCOL_VERSION 2u
#define EA_HEADER_SIZE 8u
#define EA_CRC_SIZE 4u
#define EA_MAX_PAYLOAD 4096u /* protocol ceiling; HELLO may negotiate it down */

/* Bytes COBS may produce for n input bytes (an upper bound, no delimiter). */
#define EA_COBS_BOUND(n) ((n) + (n) / 254u + 1u)
/* Encoded bytes of a frame with at most p payload bytes, without delimiters. */
#define EA_MAX_ENCODED(p) EA_COBS_BOUND(EA_HEADER_SIZE + (p) + EA_CRC_SIZE)
/* Output buffer size that always suffices for ea_frame_encode (two delimiters included). */
#define EA_WIRE_BOUND(p) (EA_MAX_ENCODED(p) + 2u)

typedef enum {
    EA_OK = 0,
    EA_NEED_MORE = 1,      /* ea_rx_push: no complete frame yet */
    EA_ERR_ARG = -1,       /* NULL pointer or impossible argument */
    EA_ERR_BUFFER = -2,    /* output buffer too small */
    EA_ERR_COBS = -3,      /* not valid COBS (zero byte, block past the end) */
    EA_ERR_SHORT = -4,     /* shorter than header + CRC */
    EA_ERR_CRC = -5,       /* CRC-32 mismatch */
    EA_ERR_MAGIC = -6,     /* first header byte is not EA_MAGIC */
    EA_ERR_LENGTH = -7,    /* payload_len disagrees with the frame's size */
    EA_ERR_OVERSIZE = -8   /* longer than max_payload allows */
} ea_status;

/* A decoded frame; after decoding, payload points into the caller's buffer. */
typedef struct {
    uint8_t version;
    uint8_t type;
    uint8_t flags;
    uint16_t seq;
    uint16_t payload_len;
    const uint8_t *payload;
} ea_frame;

/* CRC-32 (IEEE, reflected, as zlib.crc32): start with crc = 0, feed pieces in order. */
uint32_t ea_crc32_update(uint32_t crc, const uint8_t *data, size_t len);

/* COBS-encode src into dst (no delimiter). dst must not overlap src. */
int ea_cobs_encode(const uint8_t *src, size_t len, uint8_t *dst, size_t cap, size_t *out_len);

/* COBS-decode src into dst; dst == src (in place) is allowed, other overlaps are not. */
int ea_cobs_decode(const uint8_t *src, size_t len, uint8_t *dst, size_t cap, size_t *out_len);

/* Write 0x00, COBS(header, payload, CRC), 0x00 into out. f->payload_len <= max_payload. */
int ea_frame_encode(const ea_frame *f, size_t max_payload, uint8_t *out, size_t cap,
                    size_t *out_len);

/* Decode the bytes between two delimiters, in place; checks run in the order
 * oversize, cobs, short, crc, magic, length, oversize (the same as the Python decoder). */
int ea_frame_decode(uint8_t *buf, size_t len, size_t max_payload, ea_frame *out);

/* Byte-at-a-time receiver over a caller buffer of at least EA_MAX_ENCODED(max_payload). */
typedef struct {
    uint8_t *buf;
    size_t cap;
    size_t len;
    size_t max_payload;
    int skipping; /* inside an oversize frame: drop bytes until the next delimiter */
} ea_rx;

int ea_rx_init(ea_rx *rx, uint8_t *buf, size_t cap, size_t max_payload);

/* Feed one received byte. Returns EA_NEED_MORE, EA_OK with *out set (out->payload is valid
 * until the next push), or a negative ea_status for a frame that was dropped. An oversize
 * frame is reported once, as soon as it outgrows the buffer, and the rest of it skipped. */
int ea_rx_push(ea_rx *rx, uint8_t byte, ea_frame *out);

/* "ok", "cobs", "crc", ... -- the reason names of the shared test vectors. */
const char *ea_status_name(int status);

#ifdef __cplusplus
}
#endif

#endif /* EDGEADAPT_FRAME_H */
