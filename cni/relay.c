/* numanet-relay: the CNI executable (/opt/cni/bin/numanet) in C, the same relay as
 * cni/shim.py at a fraction of its start-up cost (the Python shim cannot start in less
 * than the interpreter's own ~9 ms; this runs in well under 1 ms).
 *
 * It speaks exactly the shim's framing (see cni/shim.py): one call per connection,
 * "numanet-cni 1\n", then KEY=VALUE\0 for each CNI variable set, an empty \0, then stdin
 * to its end and a half-close; the answer is "<exit code>\n" then stdout to the end. And
 * it answers exactly what the shim answers when it must answer itself:
 *
 *   - VERSION, here, for the cniVersion the config asks (when it is one numanet speaks);
 *   - a config larger than 1 MiB: CNI error 6, without reading the rest;
 *   - the agent not reachable, not answering within NUMANET_CNI_TIMEOUT seconds (120),
 *     or answering badly: CNI error 11 naming the socket, so the runtime retries;
 *   - an answer over 4 MiB is refused as a bad answer.
 *
 * The errors carry the config's cniVersion as the shim finds it: json.loads of stdin
 * (bytes: UTF-8/16/32 detected as Python's json does), a JSON object whose last
 * "cniVersion" key is a supported version string, else 1.1.0. Hence the small JSON
 * validator below. The JSON text of an answer is json.dumps' (ensure_ascii, ", " and
 * ": " separators, the socket path decoded with surrogateescape).
 *
 * No allocation failure, short write or signal ends in anything but a CNI answer or
 * the exit code; SIGPIPE is ignored as Python ignores it. Built by `make relay` (static,
 * so the binary the image builds runs on any Linux host); cni/install.py installs it,
 * and the Python shim when there is no binary.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_SOCKET "/run/numanet/cni.sock"
#define SOCKET_ENV "NUMANET_CNI_SOCKET"
#define TIMEOUT_ENV "NUMANET_CNI_TIMEOUT"
#define DEFAULT_TIMEOUT 120.0
#define SPEC_VERSION "1.1.0"
#define MAGIC "numanet-cni 1\n"
#define MAX_STDIN_BYTES (1 << 20)
#define MAX_REPLY (4 << 20)
#define DECODE_FAILURE 6
#define TRY_AGAIN_LATER 11
/* Python's json gives up (RecursionError) a little before its recursion limit of 1000. */
#define MAX_DEPTH 990

static const char *const SUPPORTED[] = {"0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"};
#define N_SUPPORTED (sizeof SUPPORTED / sizeof SUPPORTED[0])
static const char *const CNI_ENV[] = {"CNI_COMMAND", "CNI_CONTAINERID", "CNI_NETNS",
                                      "CNI_IFNAME", "CNI_ARGS", "CNI_PATH"};
#define N_CNI_ENV (sizeof CNI_ENV / sizeof CNI_ENV[0])

/* -- a growable byte buffer (allocation failure: the caller answers without it) ----- */

struct buf {
    char *data;
    size_t len, cap;
    int failed;
};

static void buf_reserve(struct buf *b, size_t more) {
    if (b->failed || b->len + more <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + more)
        cap *= 2;
    char *data = realloc(b->data, cap);
    if (!data) {
        b->failed = 1;
        return;
    }
    b->data = data;
    b->cap = cap;
}

static void buf_add(struct buf *b, const void *data, size_t len) {
    buf_reserve(b, len);
    if (b->failed)
        return;
    memcpy(b->data + b->len, data, len);
    b->len += len;
}

static void buf_str(struct buf *b, const char *s) { buf_add(b, s, strlen(s)); }

/* -- text: bytes -> code points (Python's decoders), code points -> JSON ------------- */

/* One UTF-8 sequence at s[0..n) as Python decodes it: its code point and length, or 0
 * when s does not start a valid sequence. ``surrogates``: accept encoded surrogates
 * (ED A0..BF xx), as the "surrogatepass" error handler does. */
static size_t utf8_one(const unsigned char *s, size_t n, uint32_t *cp, int surrogates) {
    unsigned char c = s[0];
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    size_t len;
    uint32_t v, min;
    if (c >= 0xC2 && c <= 0xDF) {
        len = 2, v = c & 0x1F, min = 0x80;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3, v = c & 0x0F, min = 0x800;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4, v = c & 0x07, min = 0x10000;
    } else {
        return 0;
    }
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        v = v << 6 | (s[i] & 0x3F);
    }
    if (v < min || v > 0x10FFFF || (!surrogates && v >= 0xD800 && v <= 0xDFFF))
        return 0;
    *cp = v;
    return len;
}

/* json.detect_encoding + bytes.decode(encoding, "surrogatepass"): the code points of
 * stdin, or -1 when it does not decode (json.loads raises, the shim says 1.1.0). */
static long decode_json_bytes(const unsigned char *s, size_t n, uint32_t *out) {
    int width = 1, big = 0;
    size_t skip = 0;
    if (n >= 4 && !memcmp(s, "\x00\x00\xfe\xff", 4)) {
        width = 4, big = 1, skip = 4;
    } else if (n >= 4 && !memcmp(s, "\xff\xfe\x00\x00", 4)) {
        width = 4, big = 0, skip = 4;
    } else if (n >= 2 && !memcmp(s, "\xfe\xff", 2)) {
        width = 2, big = 1, skip = 2;
    } else if (n >= 2 && !memcmp(s, "\xff\xfe", 2)) {
        width = 2, big = 0, skip = 2;
    } else if (n >= 3 && !memcmp(s, "\xef\xbb\xbf", 3)) {
        skip = 3;
    } else if (n >= 4) {
        if (!s[0])
            width = s[1] ? 2 : 4, big = 1;
        else if (!s[1])
            width = (s[2] || s[3]) ? 2 : 4, big = 0;
    } else if (n == 2) {
        if (!s[0])
            width = 2, big = 1;
        else if (!s[1])
            width = 2, big = 0;
    }
    s += skip, n -= skip;
    long count = 0;
    size_t i = 0;
    if (width == 1) {
        while (i < n) {
            uint32_t cp;
            size_t len = utf8_one(s + i, n - i, &cp, 1);
            if (!len)
                return -1;
            out[count++] = cp;
            i += len;
        }
    } else if (width == 2) {
        if (n % 2)
            return -1;
        while (i < n) {
            uint32_t u = big ? (uint32_t)(s[i] << 8 | s[i + 1]) : (uint32_t)(s[i + 1] << 8 | s[i]);
            i += 2;
            if (u >= 0xD800 && u <= 0xDBFF && i + 1 < n) {
                uint32_t l = big ? (uint32_t)(s[i] << 8 | s[i + 1])
                                 : (uint32_t)(s[i + 1] << 8 | s[i]);
                if (l >= 0xDC00 && l <= 0xDFFF) {
                    u = 0x10000 + ((u - 0xD800) << 10) + (l - 0xDC00);
                    i += 2;
                }
            }
            out[count++] = u;
        }
    } else {
        if (n % 4)
            return -1;
        for (; i < n; i += 4) {
            uint32_t u = big ? (uint32_t)s[i] << 24 | (uint32_t)s[i + 1] << 16 |
                                   (uint32_t)s[i + 2] << 8 | s[i + 3]
                             : (uint32_t)s[i + 3] << 24 | (uint32_t)s[i + 2] << 16 |
                                   (uint32_t)s[i + 1] << 8 | s[i];
            if (u > 0x10FFFF)
                return -1;
            out[count++] = u;
        }
    }
    return count;
}

/* Code points as json.dumps writes a str with ensure_ascii. */
static void json_string(struct buf *b, const uint32_t *cp, size_t n) {
    char tmp[16];
    buf_add(b, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        uint32_t c = cp[i];
        switch (c) {
        case '"': buf_str(b, "\\\""); continue;
        case '\\': buf_str(b, "\\\\"); continue;
        case '\n': buf_str(b, "\\n"); continue;
        case '\r': buf_str(b, "\\r"); continue;
        case '\t': buf_str(b, "\\t"); continue;
        case '\b': buf_str(b, "\\b"); continue;
        case '\f': buf_str(b, "\\f"); continue;
        }
        if (c >= 0x20 && c <= 0x7E) {
            tmp[0] = (char)c;
            buf_add(b, tmp, 1);
        } else if (c < 0x10000) {
            snprintf(tmp, sizeof tmp, "\\u%04x", c);
            buf_str(b, tmp);
        } else {
            c -= 0x10000;
            snprintf(tmp, sizeof tmp, "\\u%04x\\u%04x", 0xD800 | (c >> 10), 0xDC00 | (c & 0x3FF));
            buf_str(b, tmp);
        }
    }
    buf_add(b, "\"", 1);
}

/* Bytes decoded as Python's surrogateescape does (each byte of no valid UTF-8 sequence
 * becomes U+DC80..U+DCFF), appended to a code-point buffer of room ``n``. */
static size_t surrogateescape(const unsigned char *s, size_t n, uint32_t *out) {
    size_t count = 0, i = 0;
    while (i < n) {
        uint32_t cp;
        size_t len = utf8_one(s + i, n - i, &cp, 0);
        if (!len) {
            out[count++] = 0xDC00 | s[i];
            i += 1;
        } else {
            out[count++] = cp;
            i += len;
        }
    }
    return count;
}

/* -- the cniVersion a config asks for (cni.shim._requested_version) ------------------- */

struct json {
    const uint32_t *s;
    size_t n, i;
    /* the last top-level "cniVersion": set (1 string, 2 not a string), its text */
    int version_kind;
    size_t version_at, version_len;
};

static void ws(struct json *j) {
    while (j->i < j->n && (j->s[j->i] == ' ' || j->s[j->i] == '\t' || j->s[j->i] == '\n' ||
                           j->s[j->i] == '\r'))
        j->i++;
}

static int hexval(uint32_t c) {
    if (c >= '0' && c <= '9')
        return (int)(c - '0');
    if (c >= 'a' && c <= 'f')
        return (int)(c - 'a' + 10);
    if (c >= 'A' && c <= 'F')
        return (int)(c - 'A' + 10);
    return -1;
}

static int hex4(struct json *j, uint32_t *v) {
    if (j->i + 4 > j->n)
        return 0;
    *v = 0;
    for (int k = 0; k < 4; k++) {
        int h = hexval(j->s[j->i + (size_t)k]);
        if (h < 0)
            return 0;
        *v = *v << 4 | (uint32_t)h;
    }
    j->i += 4;
    return 1;
}

/* A string at j->i (on its opening quote), unescaped into ``out`` (room: its source
 * length) when ``out`` is given; 0 when it is not a valid JSON string (strict mode:
 * no control characters). */
static int string(struct json *j, uint32_t *out, size_t *len) {
    size_t count = 0;
    j->i++;
    while (j->i < j->n) {
        uint32_t c = j->s[j->i++];
        if (c == '"') {
            if (len)
                *len = count;
            return 1;
        }
        if (c < 0x20)
            return 0;
        if (c == '\\') {
            if (j->i >= j->n)
                return 0;
            uint32_t e = j->s[j->i++];
            switch (e) {
            case '"': case '\\': case '/': c = e; break;
            case 'b': c = '\b'; break;
            case 'f': c = '\f'; break;
            case 'n': c = '\n'; break;
            case 'r': c = '\r'; break;
            case 't': c = '\t'; break;
            case 'u': {
                if (!hex4(j, &c))
                    return 0;
                if (c >= 0xD800 && c <= 0xDBFF && j->i + 1 < j->n && j->s[j->i] == '\\' &&
                    j->s[j->i + 1] == 'u') {
                    size_t at = j->i;
                    uint32_t low;
                    j->i += 2;
                    if (hex4(j, &low) && low >= 0xDC00 && low <= 0xDFFF)
                        c = 0x10000 + ((c - 0xD800) << 10) + (low - 0xDC00);
                    else
                        j->i = at; /* a lone high surrogate; the next escape stands alone */
                }
                break;
            }
            default:
                return 0;
            }
        }
        if (out)
            out[count] = c;
        count++;
    }
    return 0;
}

static int literal(struct json *j, const char *word) {
    size_t len = strlen(word);
    if (j->i + len > j->n)
        return 0;
    for (size_t k = 0; k < len; k++)
        if (j->s[j->i + k] != (unsigned char)word[k])
            return 0;
    j->i += len;
    return 1;
}

static int digit(struct json *j) { return j->i < j->n && j->s[j->i] >= '0' && j->s[j->i] <= '9'; }

/* json's NUMBER_RE, -?(0|[1-9]\d*)(\.\d+)?([eE][-+]?\d+)?, and -Infinity. */
static int number(struct json *j) {
    if (j->s[j->i] == '-') {
        j->i++;
        if (literal(j, "Infinity"))
            return 1;
    }
    if (!digit(j))
        return 0;
    if (j->s[j->i] == '0')
        j->i++;
    else
        while (digit(j))
            j->i++;
    if (j->i + 1 < j->n && j->s[j->i] == '.' && j->s[j->i + 1] >= '0' && j->s[j->i + 1] <= '9') {
        j->i++;
        while (digit(j))
            j->i++;
    }
    if (j->i < j->n && (j->s[j->i] == 'e' || j->s[j->i] == 'E')) {
        size_t at = j->i++;
        if (j->i < j->n && (j->s[j->i] == '+' || j->s[j->i] == '-'))
            j->i++;
        if (!digit(j)) {
            j->i = at; /* no exponent after all: the number ends before the 'e' */
            return 1;
        }
        while (digit(j))
            j->i++;
    }
    return 1;
}

static int value(struct json *j, int depth);

static int is_version_key(const uint32_t *key, size_t len) {
    static const char name[] = "cniVersion";
    if (len != sizeof name - 1)
        return 0;
    for (size_t k = 0; k < len; k++)
        if (key[k] != (unsigned char)name[k])
            return 0;
    return 1;
}

static int object(struct json *j, int depth) {
    j->i++;
    ws(j);
    if (j->i < j->n && j->s[j->i] == '}') {
        j->i++;
        return 1;
    }
    uint32_t key[16];
    for (;;) {
        if (j->i >= j->n || j->s[j->i] != '"')
            return 0;
        size_t start = j->i, len = 0;
        /* Keys are unescaped only when short enough to be "cniVersion". */
        struct json probe = *j;
        if (!string(&probe, NULL, &len))
            return 0;
        int version = 0;
        if (len <= 16) {
            j->i = start;
            string(j, key, &len);
            version = depth == 1 && is_version_key(key, len);
        } else {
            j->i = probe.i;
        }
        ws(j);
        if (j->i >= j->n || j->s[j->i] != ':')
            return 0;
        j->i++;
        ws(j);
        if (version) {
            if (j->i < j->n && j->s[j->i] == '"') {
                size_t at = j->i;
                struct json scan = *j;
                if (!string(&scan, NULL, &len))
                    return 0;
                j->version_kind = 1, j->version_at = at, j->version_len = len;
            } else {
                j->version_kind = 2;
            }
        }
        if (!value(j, depth + 1))
            return 0;
        ws(j);
        if (j->i >= j->n)
            return 0;
        if (j->s[j->i] == '}') {
            j->i++;
            return 1;
        }
        if (j->s[j->i] != ',')
            return 0;
        j->i++;
        ws(j);
    }
}

static int array(struct json *j, int depth) {
    j->i++;
    ws(j);
    if (j->i < j->n && j->s[j->i] == ']') {
        j->i++;
        return 1;
    }
    for (;;) {
        if (!value(j, depth + 1))
            return 0;
        ws(j);
        if (j->i >= j->n)
            return 0;
        if (j->s[j->i] == ']') {
            j->i++;
            return 1;
        }
        if (j->s[j->i] != ',')
            return 0;
        j->i++;
        ws(j);
    }
}

static int value(struct json *j, int depth) {
    if (j->i >= j->n || depth > MAX_DEPTH)
        return 0;
    switch (j->s[j->i]) {
    case '{': return object(j, depth);
    case '[': return array(j, depth);
    case '"': return string(j, NULL, NULL);
    case 't': return literal(j, "true");
    case 'f': return literal(j, "false");
    case 'n': return literal(j, "null");
    case 'N': return literal(j, "NaN");
    case 'I': return literal(j, "Infinity");
    default: return number(j);
    }
}

static const char *requested_version(const unsigned char *stdin_data, size_t n) {
    if (!n)
        return SPEC_VERSION;
    uint32_t *cp = malloc(n * sizeof *cp);
    if (!cp)
        return SPEC_VERSION;
    const char *found = SPEC_VERSION;
    long count = decode_json_bytes(stdin_data, n, cp);
    struct json j = {cp, count < 0 ? 0 : (size_t)count, 0, 0, 0, 0};
    ws(&j);
    int top_object = j.i < j.n && j.s[j.i] == '{';
    if (count >= 0 && top_object && value(&j, 1)) {
        ws(&j);
        if (j.i == j.n && j.version_kind == 1) {
            uint32_t text[8];
            size_t len = 0;
            if (j.version_len <= 8) {
                j.i = j.version_at;
                string(&j, text, &len);
                for (size_t k = 0; k < N_SUPPORTED; k++) {
                    size_t m = strlen(SUPPORTED[k]), c;
                    if (m != len)
                        continue;
                    for (c = 0; c < m && text[c] == (unsigned char)SUPPORTED[k][c]; c++)
                        ;
                    if (c == m)
                        found = SUPPORTED[k];
                }
            }
        }
    }
    free(cp);
    return found;
}

/* -- answers ----------------------------------------------------------------------------- */

static void write_all(int fd, const char *data, size_t len) {
    while (len) {
        ssize_t done = write(fd, data, len);
        if (done < 0) {
            if (errno == EINTR)
                continue;
            return; /* EPIPE and the rest: the runtime stopped reading; nothing to tell */
        }
        data += done;
        len -= (size_t)done;
    }
}

/* cni.shim._error: {"cniVersion": ..., "code": ..., "msg": ..., "details": ...}\n, where
 * msg is ``before`` + the socket path (surrogateescape) + ``after``. A fixed answer when
 * memory runs out. */
static int answer_error(const char *version, int code, const char *before, const char *path,
                        const char *after, const char *details) {
    struct buf b = {0};
    size_t plen = path ? strlen(path) : 0, blen = strlen(before), alen = strlen(after);
    size_t dlen = strlen(details);
    size_t room = blen + plen + alen + dlen + 1;
    uint32_t *cp = malloc(room * sizeof *cp);
    char head[96];
    if (cp) {
        snprintf(head, sizeof head, "{\"cniVersion\": \"%s\", \"code\": %d, \"msg\": ", version,
                 code);
        buf_str(&b, head);
        size_t n = 0;
        for (size_t k = 0; k < blen; k++)
            cp[n++] = (unsigned char)before[k];
        n += surrogateescape((const unsigned char *)path, plen, cp + n);
        for (size_t k = 0; k < alen; k++)
            cp[n++] = (unsigned char)after[k];
        json_string(&b, cp, n);
        buf_str(&b, ", \"details\": ");
        n = 0;
        for (size_t k = 0; k < dlen; k++)
            cp[n++] = (unsigned char)details[k];
        json_string(&b, cp, n);
        buf_str(&b, "}\n");
        free(cp);
    }
    if (!cp || b.failed) {
        static const char fixed[] = "{\"cniVersion\": \"" SPEC_VERSION "\", \"code\": 11, "
                                    "\"msg\": \"numanet-cni is out of memory\", \"details\": "
                                    "\"the runtime retries\"}\n";
        write_all(1, fixed, sizeof fixed - 1);
    } else {
        write_all(1, b.data, b.len);
    }
    free(b.data);
    return 1;
}

static int answer_version(const char *version) {
    char out[200];
    int n = snprintf(out, sizeof out, "{\"cniVersion\": \"%s\", \"supportedVersions\": [", version);
    for (size_t k = 0; k < N_SUPPORTED; k++)
        n += snprintf(out + n, sizeof out - (size_t)n, "%s\"%s\"", k ? ", " : "", SUPPORTED[k]);
    n += snprintf(out + n, sizeof out - (size_t)n, "]}\n");
    write_all(1, out, (size_t)n);
    return 0;
}

/* -- the call ---------------------------------------------------------------------------- */

/* float(NUMANET_CNI_TIMEOUT) as the shim reads it: a finite number above 0, else 120. */
static double timeout_of(const char *text) {
    if (!text)
        return DEFAULT_TIMEOUT;
    while (*text == ' ' || (*text >= '\t' && *text <= '\r'))
        text++;
    const char *p = text;
    if (*p == '+' || *p == '-')
        p++;
    if (p[0] == '0' && (p[1] == 'x' || p[1] == 'X'))
        return DEFAULT_TIMEOUT; /* strtod reads hex, Python's float does not */
    char *end;
    errno = 0;
    double value = strtod(text, &end);
    if (end == text)
        return DEFAULT_TIMEOUT;
    while (*end == ' ' || (*end >= '\t' && *end <= '\r'))
        end++;
    if (*end || !(value > 0 && value < 1e9)) /* as the shim: nan, inf, 0, negative */
        return DEFAULT_TIMEOUT;
    return value;
}

enum outcome { OK, UNREACHABLE, TIMED_OUT, BAD };

struct call {
    const char *path;
    double timeout;
    int err;              /* errno of UNREACHABLE or of a broken connection */
    const char *why;      /* BAD: what was wrong */
    struct buf reply;
};

/* Wait until ``fd`` is ready for ``events`` (the timeout applies to each operation, as
 * Python's socket timeout does); 0 on time, -1 when it ran out. */
static int ready(int fd, short events, double timeout) {
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (;;) {
        clock_gettime(CLOCK_MONOTONIC, &now);
        double left = timeout - ((double)(now.tv_sec - start.tv_sec) +
                                 (double)(now.tv_nsec - start.tv_nsec) / 1e9);
        if (left <= 0)
            return -1;
        struct pollfd p = {fd, events, 0};
        double ms = left * 1000.0 + 1.0;
        int r = poll(&p, 1, ms > 2147483647.0 ? 2147483647 : (int)ms);
        if (r > 0)
            return 0;
        if (r < 0 && errno != EINTR)
            return 0; /* let the operation itself report it */
    }
}

static enum outcome call_agent(struct call *c, const char *request, size_t len) {
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    size_t plen = strlen(c->path);
    if (plen >= sizeof addr.sun_path) {
        c->err = -1; /* Python: "AF_UNIX path too long" */
        return UNREACHABLE;
    }
    memcpy(addr.sun_path, c->path, plen);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        c->err = errno;
        return UNREACHABLE;
    }
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
        c->err = errno;
        close(fd);
        return UNREACHABLE;
    }
    enum outcome result = OK;
    size_t sent = 0;
    while (sent < len) {
        ssize_t n = send(fd, request + sent, len - sent, MSG_NOSIGNAL);
        if (n >= 0) {
            sent += (size_t)n;
            continue;
        }
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN) {
            if (ready(fd, POLLOUT, c->timeout) < 0) {
                result = TIMED_OUT;
                goto done;
            }
            continue;
        }
        if (errno == EPIPE || errno == ECONNRESET)
            goto answer; /* the agent answered early and closed: its answer waits */
        c->err = errno;
        result = BAD;
        goto done;
    }
    if (shutdown(fd, SHUT_WR) < 0 && errno != EPIPE && errno != ECONNRESET) {
        c->err = errno;
        result = BAD;
        goto done;
    }
answer:
    for (;;) {
        buf_reserve(&c->reply, 65536);
        if (c->reply.failed) {
            c->why = "answer too large";
            result = BAD;
            goto done;
        }
        ssize_t n = recv(fd, c->reply.data + c->reply.len, 65536, 0);
        if (n > 0) {
            c->reply.len += (size_t)n;
            if (c->reply.len > MAX_REPLY) {
                c->why = "answer too large";
                result = BAD;
                goto done;
            }
            continue;
        }
        if (n == 0)
            break;
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN) {
            if (ready(fd, POLLIN, c->timeout) < 0) {
                result = TIMED_OUT;
                goto done;
            }
            continue;
        }
        /* Reset after a whole answer (the agent closed on an unread request): relay it. */
        if (errno == ECONNRESET && c->reply.len)
            break;
        c->err = errno;
        result = BAD;
        goto done;
    }
done:
    close(fd);
    return result;
}

static int relay(const char *stdin_data, size_t stdin_len) {
    const char *path = getenv(SOCKET_ENV);
    if (!path || !*path)
        path = DEFAULT_SOCKET;
    struct call c = {.path = path, .timeout = timeout_of(getenv(TIMEOUT_ENV))};
    struct buf request = {0};
    buf_str(&request, MAGIC);
    for (size_t k = 0; k < N_CNI_ENV; k++) {
        const char *value = getenv(CNI_ENV[k]);
        if (!value)
            continue;
        buf_str(&request, CNI_ENV[k]);
        buf_add(&request, "=", 1);
        buf_str(&request, value);
        buf_add(&request, "", 1);
    }
    buf_add(&request, "", 1);
    buf_add(&request, stdin_data, stdin_len);
    const char *version = NULL;
#define VERSION_OF_STDIN (version ? version : (version = requested_version( \
                              (const unsigned char *)stdin_data, stdin_len)))
    if (request.failed)
        return answer_error(VERSION_OF_STDIN, TRY_AGAIN_LATER, "numanet agent is not reachable at ",
                            path, ": Cannot allocate memory",
                            "numanet-cni ran out of memory; the runtime retries");
    enum outcome outcome = call_agent(&c, request.data, request.len);
    free(request.data);
    char after[160];
    switch (outcome) {
    case UNREACHABLE:
        snprintf(after, sizeof after, ": %s",
                 c.err < 0 ? "AF_UNIX path too long" : strerror(c.err));
        return answer_error(VERSION_OF_STDIN, TRY_AGAIN_LATER, "numanet agent is not reachable at ",
                            path, after,
                            "start the numanet agent on this node (it serves the CNI socket); "
                            SOCKET_ENV " overrides the path. The runtime retries.");
    case TIMED_OUT:
        snprintf(after, sizeof after, " did not answer within %g s", c.timeout);
        return answer_error(VERSION_OF_STDIN, TRY_AGAIN_LATER, "numanet agent at ", path, after,
                            "the agent is overloaded or stuck; check its log. The runtime "
                            "retries.");
    case BAD:
        if (c.why)
            snprintf(after, sizeof after, " answered badly: %s", c.why);
        else
            snprintf(after, sizeof after, " answered badly: the connection broke (%s)",
                     strerror(c.err));
        return answer_error(VERSION_OF_STDIN, TRY_AGAIN_LATER, "numanet agent at ", path, after,
                            "the agent may have restarted during the call; the runtime retries");
    case OK:
        break;
    }
    char *reply = c.reply.data;
    size_t len = c.reply.len, digits = 0;
    while (digits < len && reply[digits] >= '0' && reply[digits] <= '9')
        digits++;
    if (!digits || digits >= len || reply[digits] != '\n')
        return answer_error(VERSION_OF_STDIN, TRY_AGAIN_LATER, "numanet agent at ", path,
                            " answered badly: the agent closed the connection without a "
                            "complete answer",
                            "the agent may have restarted during the call; the runtime retries");
    long code = 0;
    for (size_t k = 0; k < digits && code < 100000; k++)
        code = code * 10 + (reply[k] - '0');
    write_all(1, reply + digits + 1, len - digits - 1);
    return (int)(code & 0xFF);
}

int main(void) {
    signal(SIGPIPE, SIG_IGN);
    const char *command = getenv("CNI_COMMAND");
    if ((!command || !*command) && isatty(0)) {
        const char *path = getenv(SOCKET_ENV);
        fprintf(stderr,
                "numanet CNI plugin: run by the container runtime with CNI_COMMAND set "
                "(CNI spec 0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0); it relays calls to the numanet "
                "agent at %s\n", path && *path ? path : DEFAULT_SOCKET);
        return 1;
    }
    /* stdin to its end, but no more than MAX_STDIN_BYTES + 1 bytes (cni.shim.read_stdin). */
    static char input[MAX_STDIN_BYTES + 1];
    size_t len = 0;
    while (len < sizeof input) {
        ssize_t n = read(0, input + len, sizeof input - len);
        if (n > 0) {
            len += (size_t)n;
        } else if (n == 0 || errno != EINTR) {
            break;
        }
    }
    if (command && !strcmp(command, "VERSION"))
        return answer_version(requested_version((const unsigned char *)input, len));
    if (len > MAX_STDIN_BYTES) {
        static const char too_large[] =
            "{\"cniVersion\": \"" SPEC_VERSION "\", \"code\": 6, \"msg\": \"network "
            "configuration on stdin is larger than 1048576 bytes\", \"details\": \"numanet "
            "refuses configurations this large; it never read the rest\"}\n";
        write_all(1, too_large, sizeof too_large - 1);
        return 1;
    }
    return relay(input, len);
}
