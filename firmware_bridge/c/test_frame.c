/*
 * test_frame.c -- check edgeadapt_frame.c against the shared test vectors, then fuzz it.
 *
 *   cc -std=c99 -Wall -Wextra -Werror -pedantic edgeadapt_frame.c test_frame.c -o test_frame
 *   ./test_frame test_vectors.txt [--fuzz ITERATIONS SEED]
 *
 * Exit status 0 when every vector passes (and the fuzz loop found nothing), 1 otherwise.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edgeadapt_frame.h"

#define LINE_MAX_CHARS (1u << 16)
#define BUF_MAX (1u << 15)
#define POOL_MAX 32

static char line[LINE_MAX_CHARS];
static uint8_t a[BUF_MAX], b[BUF_MAX], c[BUF_MAX], d[BUF_MAX];
static int failures = 0;

/* Valid encoded frames, kept for the fuzz loop. */
static uint8_t pool[POOL_MAX][EA_MAX_ENCODED(EA_MAX_PAYLOAD)];
static size_t pool_len[POOL_MAX];
static size_t pool_count = 0;

static void fail(int lineno, const char *what) {
    fprintf(stderr, "line %d: %s\n", lineno, what);
    failures++;
}

/* Parse hex ("-" is empty) into out; returns the length, or (size_t)-1 on bad input. */
static size_t unhex(const char *s, uint8_t *out, size_t cap) {
    size_t n = 0, len;
    unsigned v;
    if (s == NULL) return (size_t)-1;
    if (strcmp(s, "-") == 0) return 0;
    len = strlen(s);
    if (len % 2 != 0 || len / 2 > cap) return (size_t)-1;
    for (n = 0; n < len / 2; n++) {
        if (sscanf(s + 2 * n, "%2x", &v) != 1) return (size_t)-1;
        out[n] = (uint8_t)v;
    }
    return n;
}

/* A decimal field; a missing one reads as 0, which no vector uses as max_payload. */
static long num(const char *s) { return s == NULL ? 0 : atol(s); }

static int same(const uint8_t *x, size_t nx, const uint8_t *y, size_t ny) {
    return nx == ny && (nx == 0 || memcmp(x, y, nx) == 0);
}

static void check_frame(int lineno, int reencode, size_t max_payload) {
    ea_frame f, g;
    char *tok[5];
    size_t n = unhex(strtok(NULL, " "), a, BUF_MAX), np, nw;
    int i, rc;
    for (i = 0; i < 5; i++) tok[i] = strtok(NULL, " ");
    np = unhex(tok[4], b, BUF_MAX);
    if (n == (size_t)-1 || np == (size_t)-1 || tok[3] == NULL) {
        fail(lineno, "malformed vector line");
        return;
    }
    memcpy(d, a, n);
    if (reencode && pool_count < POOL_MAX && n <= sizeof pool[0]) {
        memcpy(pool[pool_count], a, n);
        pool_len[pool_count++] = n;
    }
    rc = ea_frame_decode(a, n, max_payload, &f); /* in place: a is scratch from here on */
    if (rc != EA_OK) {
        fail(lineno, ea_status_name(rc));
        return;
    }
    if (f.version != num(tok[0]) || f.type != num(tok[1]) || f.flags != num(tok[2]) ||
        f.seq != num(tok[3]) || !same(f.payload, f.payload_len, b, np)) {
        fail(lineno, "decoded fields differ");
        return;
    }
    if (!reencode) return;
    g = f;
    g.payload = b;
    rc = ea_frame_encode(&g, max_payload, c, BUF_MAX, &nw);
    if (rc != EA_OK || nw < 2 || c[0] != 0 || c[nw - 1] != 0 || !same(c + 1, nw - 2, d, n)) {
        fail(lineno, "encoding the decoded fields does not give the vector's bytes");
    }
    /* Exactly the wire size (two delimiters included) is enough; one byte less is not. */
    rc = ea_frame_encode(&g, max_payload, c, n + 2, &nw);
    if (rc != EA_OK || nw != n + 2 || !same(c + 1, nw - 2, d, n)) {
        fail(lineno, "frame encode refuses a buffer of exactly the needed size");
    }
    if (ea_frame_encode(&g, max_payload, c, n + 1, &nw) != EA_ERR_BUFFER) {
        fail(lineno, "frame encode overflows a buffer one byte short");
    }
}

static void check_line(int lineno) {
    char *kind = strtok(line, " \n"), *t1, *t2, *t3;
    size_t n1, n2, n, max_payload, i;
    ea_frame f;
    ea_rx rx;
    int rc;
    char events[4096];
    if (kind == NULL || kind[0] == '#') return;
    if (strcmp(kind, "crc") == 0) {
        n1 = unhex(strtok(NULL, " "), a, BUF_MAX);
        t2 = strtok(NULL, " ");
        if (n1 == (size_t)-1 || t2 == NULL) {
            fail(lineno, "malformed crc line");
            return;
        }
        if (ea_crc32_update(0, a, n1) != (uint32_t)strtoul(t2, NULL, 16)) fail(lineno, "crc");
    } else if (strcmp(kind, "cobs") == 0) {
        n1 = unhex(strtok(NULL, " "), a, BUF_MAX);
        n2 = unhex(strtok(NULL, " "), b, BUF_MAX);
        if (n1 == (size_t)-1 || n2 == (size_t)-1) {
            fail(lineno, "malformed cobs line");
            return;
        }
        if (ea_cobs_encode(a, n1, c, BUF_MAX, &n) != EA_OK || !same(c, n, b, n2))
            fail(lineno, "cobs encode differs");
        /* A buffer of exactly the encoded size is enough; one byte less is not. */
        if (ea_cobs_encode(a, n1, c, n2, &n) != EA_OK || !same(c, n, b, n2))
            fail(lineno, "cobs encode refuses a buffer of exactly the needed size");
        if (n2 > 0 && ea_cobs_encode(a, n1, c, n2 - 1, &n) != EA_ERR_BUFFER)
            fail(lineno, "cobs encode overflows a buffer one byte short");
        if (ea_cobs_decode(b, n2, b, n2, &n) != EA_OK || !same(b, n, a, n1))
            fail(lineno, "cobs decode differs");
    } else if (strcmp(kind, "valid") == 0 || strcmp(kind, "decodes") == 0) {
        max_payload = (size_t)num(strtok(NULL, " "));
        check_frame(lineno, kind[0] == 'v', max_payload);
    } else if (strcmp(kind, "invalid") == 0) {
        max_payload = (size_t)num(strtok(NULL, " "));
        n1 = unhex(strtok(NULL, " "), a, BUF_MAX);
        t3 = strtok(NULL, " ");
        if (n1 == (size_t)-1 || t3 == NULL) {
            fail(lineno, "malformed invalid line");
            return;
        }
        rc = ea_frame_decode(a, n1, max_payload, &f);
        if (strcmp(ea_status_name(rc), t3) != 0) fail(lineno, ea_status_name(rc));
    } else if (strcmp(kind, "stream") == 0) {
        max_payload = (size_t)num(strtok(NULL, " "));
        n1 = unhex(strtok(NULL, " "), a, BUF_MAX);
        t1 = strtok(NULL, " ");
        if (n1 == (size_t)-1 || t1 == NULL) {
            fail(lineno, "malformed stream line");
            return;
        }
        ea_rx_init(&rx, c, BUF_MAX, max_payload);
        events[0] = '\0';
        for (i = 0; i < n1; i++) {
            char one[32];
            rc = ea_rx_push(&rx, a[i], &f);
            if (rc == EA_NEED_MORE) continue;
            if (rc == EA_OK) {
                sprintf(one, "ok.%u.%u", (unsigned)f.type, (unsigned)f.seq);
            } else {
                sprintf(one, "%s", ea_status_name(rc));
            }
            if (strlen(events) + strlen(one) + 2 >= sizeof events) break;
            if (events[0] != '\0') strcat(events, ",");
            strcat(events, one);
        }
        if (strcmp(events[0] ? events : "-", t1) != 0) fail(lineno, events);
    } else {
        fail(lineno, "unknown vector kind");
    }
}

/* xorshift32: a tiny deterministic PRNG, so a failing seed can be replayed. */
static uint32_t rng_state = 1;
static uint32_t rnd(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 17;
    rng_state ^= rng_state << 5;
    return rng_state;
}

static void fuzz(long iterations) {
    long it;
    for (it = 0; it < iterations && pool_count > 0; it++) {
        size_t k = rnd() % pool_count, n = pool_len[k], i, m = 1 + rnd() % 4;
        ea_frame f, ref;
        ea_rx rx;
        int rc;
        memcpy(a, pool[k], n);
        for (i = 0; i < m; i++) { /* flip, overwrite, truncate, or insert */
            uint32_t op = rnd() % 4, pos = n ? rnd() % (uint32_t)n : 0;
            if (op == 0 && n) a[pos] ^= (uint8_t)(1u << (rnd() % 8));
            if (op == 1 && n) a[pos] = (uint8_t)rnd();
            if (op == 2) n = pos;
            if (op == 3 && n + 1 < BUF_MAX) {
                memmove(a + pos + 1, a + pos, n - pos);
                a[pos] = (uint8_t)rnd();
                n++;
            }
        }
        memcpy(b, a, n);
        rc = ea_frame_decode(b, n, EA_MAX_PAYLOAD, &f);
        if (rc > 0 || rc < EA_ERR_OVERSIZE || rc == EA_ERR_ARG || rc == EA_ERR_BUFFER ||
            (rc == EA_OK && (f.payload < b || f.payload + f.payload_len > b + n))) {
            fprintf(stderr, "fuzz iteration %ld: decode returned %d\n", it, rc);
            failures++;
            return;
        }
        /* Whatever garbage came first, a delimiter and a good frame must decode. */
        ea_rx_init(&rx, c, BUF_MAX, EA_MAX_PAYLOAD);
        for (i = 0; i < n; i++) {
            rc = ea_rx_push(&rx, a[i], &f);
            if (rc == EA_ERR_ARG || rc == EA_ERR_BUFFER) break;
        }
        rc = ea_rx_push(&rx, 0, &f);
        for (i = 0; i < pool_len[k]; i++) rc = ea_rx_push(&rx, pool[k][i], &f);
        rc = ea_rx_push(&rx, 0, &f);
        memcpy(b, pool[k], pool_len[k]);
        if (rc != EA_OK || ea_frame_decode(b, pool_len[k], EA_MAX_PAYLOAD, &ref) != EA_OK ||
            f.seq != ref.seq || !same(f.payload, f.payload_len, ref.payload, ref.payload_len)) {
            fprintf(stderr, "fuzz iteration %ld: no resync after garbage (rc %d)\n", it, rc);
            failures++;
            return;
        }
    }
    printf("fuzz: %ld iterations\n", it);
}

int main(int argc, char **argv) {
    FILE *fp;
    int lineno = 0, vectors = 0;
    if (argc < 2) {
        fprintf(stderr, "usage: %s test_vectors.txt [--fuzz ITERATIONS SEED]\n", argv[0]);
        return 2;
    }
    fp = fopen(argv[1], "r");
    if (fp == NULL) {
        perror(argv[1]);
        return 2;
    }
    while (fgets(line, sizeof line, fp) != NULL) {
        size_t len = strlen(line);
        lineno++;
        if (len + 1 >= sizeof line) {
            fail(lineno, "line too long");
            break;
        }
        if (len && line[len - 1] == '\n') line[len - 1] = '\0';
        if (line[0] != '#' && line[0] != '\0') vectors++;
        check_line(lineno);
    }
    fclose(fp);
    printf("vectors: %d checked, %d failed\n", vectors, failures);
    if (argc >= 5 && strcmp(argv[2], "--fuzz") == 0) {
        rng_state = (uint32_t)strtoul(argv[4], NULL, 10) | 1u;
        fuzz(atol(argv[3]));
    }
    return failures ? 1 : 0;
}
