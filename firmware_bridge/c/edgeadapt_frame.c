/* edgeadapt_frame.c -- see edgeadapt_frame.h. Portable C99, no allocation. */
#include "edgeadapt_frame.h"

/* Half-byte table: 64 bytes of constants instead of 1 KiB, two lookups per byte. */
static const uint32_t ea_crc_nibble[16] = {
    0x00000000u, 0x1DB71064u, 0x3B6E20C8u, 0x26D930ACu, 0x76DC4190u, 0x6B6B51F4u,
    0x4DB26158u, 0x5005713Cu, 0xEDB88320u, 0xF00F9344u, 0xD6D6A3E8u, 0xCB61B38Cu,
    0x9B64C2B0u, 0x86D3D2D4u, 0xA00AE278u, 0xBDBDF21Cu};

uint32_t ea_crc32_update(uint32_t crc, const uint8_t *data, size_t len) {
    size_t i;
    crc = ~crc;
    for (i = 0; i < len; i++) {
        crc ^= data[i];
        crc = (crc >> 4) ^ ea_crc_nibble[crc & 0x0Fu];
        crc = (crc >> 4) ^ ea_crc_nibble[crc & 0x0Fu];
    }
    return ~crc;
}

/* Streaming COBS writer, so a frame's three parts need no contiguous scratch copy.
 * A block's code byte is reserved when the block opens. After a full 254-byte block the
 * next block opens only when more data comes, so data ending on a full block needs no
 * spare byte: a buffer of exactly the encoded size is enough. */
typedef struct {
    uint8_t *out;
    size_t cap, pos, code_pos;
    uint8_t code;
    int open; /* a block is open and code_pos is its code byte */
    int overflow;
} cobs_writer;

static void cw_open(cobs_writer *w) {
    w->code_pos = w->pos;
    if (w->pos < w->cap) {
        w->pos++;
    } else {
        w->overflow = 1;
    }
    w->code = 1;
    w->open = 1;
}

static void cw_close(cobs_writer *w) {
    if (!w->overflow) w->out[w->code_pos] = w->code;
    w->open = 0;
}

static void cw_init(cobs_writer *w, uint8_t *out, size_t cap) {
    w->out = out;
    w->cap = cap;
    w->pos = 0;
    w->overflow = 0;
    cw_open(w); /* even empty data encodes to one code byte */
}

static void cw_put(cobs_writer *w, uint8_t b) {
    if (!w->open) cw_open(w); /* data goes on after a full block */
    if (b == 0) {             /* the zero is implied by closing the block; another follows */
        cw_close(w);
        cw_open(w);
        return;
    }
    if (w->pos < w->cap) {
        w->out[w->pos++] = b;
    } else {
        w->overflow = 1;
    }
    if (++w->code == 0xFFu) cw_close(w); /* a full block: no zero implied after it */
}

static int cw_finish(cobs_writer *w, size_t *out_len) {
    if (w->open) cw_close(w);
    if (w->overflow) return EA_ERR_BUFFER;
    *out_len = w->pos;
    return EA_OK;
}

int ea_cobs_encode(const uint8_t *src, size_t len, uint8_t *dst, size_t cap, size_t *out_len) {
    cobs_writer w;
    size_t i;
    if ((src == NULL && len > 0) || dst == NULL || out_len == NULL) return EA_ERR_ARG;
    cw_init(&w, dst, cap);
    for (i = 0; i < len; i++) cw_put(&w, src[i]);
    return cw_finish(&w, out_len);
}

int ea_cobs_decode(const uint8_t *src, size_t len, uint8_t *dst, size_t cap, size_t *out_len) {
    size_t i = 0, o = 0, k;
    if ((src == NULL && len > 0) || dst == NULL || out_len == NULL) return EA_ERR_ARG;
    /* In place is safe: each block writes at most as many bytes as it reads, behind them. */
    while (i < len) {
        uint8_t code = src[i];
        if (code == 0 || (size_t)code > len - i) return EA_ERR_COBS;
        for (k = 1; k < code; k++) {
            uint8_t b = src[i + k];
            if (b == 0) return EA_ERR_COBS;
            if (o >= cap) return EA_ERR_BUFFER;
            dst[o++] = b;
        }
        i += code;
        if (code != 0xFFu && i < len) { /* the implied zero, except after a full block */
            if (o >= cap) return EA_ERR_BUFFER;
            dst[o++] = 0;
        }
    }
    *out_len = o;
    return EA_OK;
}

int ea_frame_encode(const ea_frame *f, size_t max_payload, uint8_t *out, size_t cap,
                    size_t *out_len) {
    uint8_t head[EA_HEADER_SIZE], tail[EA_CRC_SIZE];
    uint32_t crc;
    cobs_writer w;
    size_t i, n;
    int rc;
    if (f == NULL || out == NULL || out_len == NULL) return EA_ERR_ARG;
    if (f->payload == NULL && f->payload_len > 0) return EA_ERR_ARG;
    if (f->payload_len > max_payload) return EA_ERR_OVERSIZE;
    if (cap < 2) return EA_ERR_BUFFER;
    head[0] = (uint8_t)EA_MAGIC;
    head[1] = f->version;
    head[2] = f->type;
    head[3] = f->flags;
    head[4] = (uint8_t)(f->seq & 0xFFu);
    head[5] = (uint8_t)(f->seq >> 8);
    head[6] = (uint8_t)(f->payload_len & 0xFFu);
    head[7] = (uint8_t)(f->payload_len >> 8);
    crc = ea_crc32_update(0, head, sizeof head);
    crc = ea_crc32_update(crc, f->payload, f->payload_len);
    for (i = 0; i < EA_CRC_SIZE; i++) tail[i] = (uint8_t)(crc >> (8u * i));
    out[0] = 0; /* leading delimiter: ends any half frame the receiver still holds */
    cw_init(&w, out + 1, cap - 2);
    for (i = 0; i < sizeof head; i++) cw_put(&w, head[i]);
    for (i = 0; i < f->payload_len; i++) cw_put(&w, f->payload[i]);
    for (i = 0; i < sizeof tail; i++) cw_put(&w, tail[i]);
    rc = cw_finish(&w, &n);
    if (rc != EA_OK) return rc;
    out[n + 1] = 0;
    *out_len = n + 2;
    return EA_OK;
}

int ea_frame_decode(uint8_t *buf, size_t len, size_t max_payload, ea_frame *out) {
    size_t n, plen;
    uint32_t crc;
    int rc;
    if ((buf == NULL && len > 0) || out == NULL) return EA_ERR_ARG;
    if (len > EA_MAX_ENCODED(max_payload)) return EA_ERR_OVERSIZE;
    if (len == 0) return EA_ERR_SHORT;
    rc = ea_cobs_decode(buf, len, buf, len, &n);
    if (rc != EA_OK) return rc;
    if (n < EA_HEADER_SIZE + EA_CRC_SIZE) return EA_ERR_SHORT;
    crc = (uint32_t)buf[n - 4] | ((uint32_t)buf[n - 3] << 8) | ((uint32_t)buf[n - 2] << 16) |
          ((uint32_t)buf[n - 1] << 24);
    if (ea_crc32_update(0, buf, n - EA_CRC_SIZE) != crc) return EA_ERR_CRC;
    if (buf[0] != EA_MAGIC) return EA_ERR_MAGIC;
    plen = (size_t)buf[6] | ((size_t)buf[7] << 8);
    if (plen != n - EA_HEADER_SIZE - EA_CRC_SIZE) return EA_ERR_LENGTH;
    if (plen > max_payload) return EA_ERR_OVERSIZE;
    out->version = buf[1];
    out->type = buf[2];
    out->flags = buf[3];
    out->seq = (uint16_t)(buf[4] | (buf[5] << 8));
    out->payload_len = (uint16_t)plen;
    out->payload = buf + EA_HEADER_SIZE;
    return EA_OK;
}

int ea_rx_init(ea_rx *rx, uint8_t *buf, size_t cap, size_t max_payload) {
    if (rx == NULL || buf == NULL || cap < EA_MAX_ENCODED(max_payload)) return EA_ERR_ARG;
    rx->buf = buf;
    rx->cap = EA_MAX_ENCODED(max_payload);
    rx->len = 0;
    rx->max_payload = max_payload;
    rx->skipping = 0;
    return EA_OK;
}

int ea_rx_push(ea_rx *rx, uint8_t byte, ea_frame *out) {
    size_t len;
    if (rx == NULL || out == NULL) return EA_ERR_ARG;
    if (byte != 0) {
        if (rx->skipping) return EA_NEED_MORE;
        if (rx->len >= rx->cap) { /* report once, then drop bytes until the delimiter */
            rx->skipping = 1;
            rx->len = 0;
            return EA_ERR_OVERSIZE;
        }
        rx->buf[rx->len++] = byte;
        return EA_NEED_MORE;
    }
    len = rx->len;
    rx->len = 0;
    if (rx->skipping) {
        rx->skipping = 0;
        return EA_NEED_MORE;
    }
    if (len == 0) return EA_NEED_MORE; /* doubled delimiters are padding */
    return ea_frame_decode(rx->buf, len, rx->max_payload, out);
}

const char *ea_status_name(int status) {
    switch (status) {
    case EA_OK: return "ok";
    case EA_NEED_MORE: return "need_more";
    case EA_ERR_ARG: return "arg";
    case EA_ERR_BUFFER: return "buffer";
    case EA_ERR_COBS: return "cobs";
    case EA_ERR_SHORT: return "short";
    case EA_ERR_CRC: return "crc";
    case EA_ERR_MAGIC: return "magic";
    case EA_ERR_LENGTH: return "length";
    case EA_ERR_OVERSIZE: return "oversize";
    default: return "unknown";
    }
}
