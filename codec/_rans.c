/* The rANS coder of codec/rans.py in C, on buffers: the same bytes as CompressAI's coder (a 64-bit state
 * renormalised by 32-bit words, 16-bit probabilities, 4-bit bypass chunks for values outside a CDF row),
 * without turning every symbol and index into a Python int and back (about 40 % of a layer's decode at
 * Kodak size went to those conversions).
 *
 * Tables: `cdf` holds every row's CDF one after another (int32), row r at cdf[starts[r]], lengths[r]
 * entries long; its last symbol, lengths[r] - 2, is the escape to bypass coding; offsets[r] is added to
 * every value of the row.
 *
 *   encode(symbols, indexes, cdf, starts, lengths, offsets) -> bytes
 *   start(string) -> (state, position)                    the state after the stream's first two words
 *   decode(string, state, position, indexes, cdf, starts, lengths, offsets, out) -> (state, position)
 *
 * symbols, indexes, out and the tables are C-contiguous int32 buffers (numpy arrays); `out` receives one
 * symbol per index. A stream read past its end reads zeros, as static/decoder/rans.js does.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>

#define PRECISION 16
#define LOWER_BOUND (1ull << 31)
#define BYPASS_BITS 4
#define MAX_BYPASS ((1 << BYPASS_BITS) - 1)

typedef struct {
    const int32_t *cdf;
    const int32_t *starts;
    const int32_t *lengths;
    const int32_t *offsets;
    Py_ssize_t rows;
    Py_ssize_t cdf_length;
} Tables;

static int int32_buffer(Py_buffer *view, const char *name) {
    if (view->itemsize != 4 || view->len % 4 != 0) {
        PyErr_Format(PyExc_ValueError, "%s: expected int32 values", name);
        return 0;
    }
    return 1;
}

static int tables_from(Tables *t, Py_buffer *cdf, Py_buffer *starts, Py_buffer *lengths, Py_buffer *offsets) {
    if (!int32_buffer(cdf, "cdf") || !int32_buffer(starts, "starts") || !int32_buffer(lengths, "lengths") ||
        !int32_buffer(offsets, "offsets")) {
        return 0;
    }
    t->rows = starts->len / 4;
    if (lengths->len / 4 != t->rows || offsets->len / 4 != t->rows) {
        PyErr_SetString(PyExc_ValueError, "starts, lengths and offsets differ in length");
        return 0;
    }
    t->cdf = cdf->buf;
    t->starts = starts->buf;
    t->lengths = lengths->buf;
    t->offsets = offsets->buf;
    t->cdf_length = cdf->len / 4;
    for (Py_ssize_t r = 0; r < t->rows; r++) {
        if (t->lengths[r] < 2 || t->starts[r] < 0 || (Py_ssize_t)t->starts[r] + t->lengths[r] > t->cdf_length) {
            PyErr_Format(PyExc_ValueError, "cdf row %zd is outside the table", r);
            return 0;
        }
    }
    return 1;
}

/* The row of symbol i, checked. */
static int row_of(const Tables *t, int32_t index, Py_ssize_t i) {
    if (index < 0 || index >= t->rows) {
        PyErr_Format(PyExc_ValueError, "index %d at %zd outside the %zd cdf rows", index, i, t->rows);
        return 0;
    }
    return 1;
}

/* -- encoding: symbols last to first, words written backwards from the end of the buffer -- */

static void put(uint64_t *x, uint32_t **ptr, uint32_t start, uint32_t frequency) {
    const uint64_t limit = ((LOWER_BOUND >> PRECISION) << 32) * frequency;
    if (*x >= limit) {
        *--*ptr = (uint32_t)*x;
        *x >>= 32;
    }
    *x = ((*x / frequency) << PRECISION) + (*x % frequency) + start;
}

static void put_bits(uint64_t *x, uint32_t **ptr, uint32_t value) {
    const uint64_t limit = ((LOWER_BOUND >> PRECISION) << 32) << (PRECISION - BYPASS_BITS);
    if (*x >= limit) {
        *--*ptr = (uint32_t)*x;
        *x >>= 32;
    }
    *x = (*x << BYPASS_BITS) | value;
}

/* Bypass chunks of a value outside its row: the chunks of raw, then their count in chunks of at most 15. */
static int32_t bypass_chunks(int32_t raw) {
    int32_t chunks = 0;
    while (chunks < 8 && (raw >> (chunks * BYPASS_BITS)) != 0) chunks++;
    return chunks;
}

static PyObject *rans_encode(PyObject *self, PyObject *args) {
    Py_buffer symbols, indexes, cdf, starts, lengths, offsets;
    if (!PyArg_ParseTuple(args, "y*y*y*y*y*y*", &symbols, &indexes, &cdf, &starts, &lengths, &offsets)) return NULL;
    PyObject *result = NULL;
    uint32_t *words = NULL;
    Tables t;
    if (!int32_buffer(&symbols, "symbols") || !int32_buffer(&indexes, "indexes")) goto done;
    if (symbols.len != indexes.len) {
        PyErr_SetString(PyExc_ValueError, "symbols and indexes differ in length");
        goto done;
    }
    if (!tables_from(&t, &cdf, &starts, &lengths, &offsets)) goto done;
    const Py_ssize_t count = symbols.len / 4;
    const int32_t *s = symbols.buf;
    const int32_t *idx = indexes.buf;
    /* at most one word per symbol and per bypass chunk, and two for the flush */
    Py_ssize_t bound = 2;
    for (Py_ssize_t i = 0; i < count; i++) {
        if (!row_of(&t, idx[i], i)) goto done;
        const int32_t max_value = t.lengths[idx[i]] - 2;
        const int64_t value = (int64_t)s[i] - t.offsets[idx[i]];
        bound += 1;
        if (value < 0 || value >= max_value) {
            const int64_t raw = value < 0 ? -2 * value - 1 : 2 * (value - max_value);
            if (raw > INT32_MAX) {
                PyErr_Format(PyExc_OverflowError, "symbol %d at %zd is too far outside its cdf row", s[i], i);
                goto done;
            }
            const int32_t chunks = bypass_chunks((int32_t)raw);
            bound += chunks + chunks / MAX_BYPASS + 1;
        }
    }
    words = malloc(sizeof(uint32_t) * bound);
    if (words == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    uint32_t *end = words + bound;
    uint32_t *ptr = end;
    uint64_t x = LOWER_BOUND;
    for (Py_ssize_t i = count - 1; i >= 0; i--) {
        const int32_t row = idx[i];
        const int32_t *row_cdf = t.cdf + t.starts[row];
        const int32_t max_value = t.lengths[row] - 2;
        int32_t value = s[i] - t.offsets[row];
        if (value < 0 || value >= max_value) {
            const int32_t raw = value < 0 ? -2 * value - 1 : 2 * (value - max_value);
            int32_t chunks = bypass_chunks(raw);
            for (int32_t j = chunks - 1; j >= 0; j--) put_bits(&x, &ptr, (raw >> (j * BYPASS_BITS)) & MAX_BYPASS);
            while (chunks >= MAX_BYPASS) {
                chunks -= MAX_BYPASS;
                put_bits(&x, &ptr, MAX_BYPASS);
            }
            put_bits(&x, &ptr, (uint32_t)chunks);
            value = max_value;
        }
        put(&x, &ptr, (uint32_t)row_cdf[value], (uint32_t)(row_cdf[value + 1] - row_cdf[value]));
    }
    ptr -= 2;
    ptr[0] = (uint32_t)x;
    ptr[1] = (uint32_t)(x >> 32);
    const Py_ssize_t n = end - ptr;
    result = PyBytes_FromStringAndSize(NULL, 4 * n);
    if (result != NULL) {
        unsigned char *out = (unsigned char *)PyBytes_AS_STRING(result);
        for (Py_ssize_t w = 0; w < n; w++) {
            const uint32_t word = ptr[w];
            out[4 * w] = (unsigned char)word;
            out[4 * w + 1] = (unsigned char)(word >> 8);
            out[4 * w + 2] = (unsigned char)(word >> 16);
            out[4 * w + 3] = (unsigned char)(word >> 24);
        }
    }
done:
    free(words);
    PyBuffer_Release(&symbols);
    PyBuffer_Release(&indexes);
    PyBuffer_Release(&cdf);
    PyBuffer_Release(&starts);
    PyBuffer_Release(&lengths);
    PyBuffer_Release(&offsets);
    return result;
}

/* -- decoding: words read forwards, little-endian, zeros past the end -- */

typedef struct {
    const unsigned char *bytes;
    Py_ssize_t words;
    Py_ssize_t position;
    uint64_t x;
} Stream;

static uint32_t next_word(Stream *st) {
    const Py_ssize_t at = st->position++;
    if (at >= st->words) return 0;
    const unsigned char *b = st->bytes + 4 * at;
    return (uint32_t)b[0] | ((uint32_t)b[1] << 8) | ((uint32_t)b[2] << 16) | ((uint32_t)b[3] << 24);
}

static uint32_t get_bits(Stream *st) {
    const uint32_t value = (uint32_t)(st->x & MAX_BYPASS);
    st->x >>= BYPASS_BITS;
    if (st->x < LOWER_BOUND) st->x = (st->x << 32) | next_word(st);
    return value;
}

static PyObject *rans_start(PyObject *self, PyObject *args) {
    Py_buffer string;
    if (!PyArg_ParseTuple(args, "y*", &string)) return NULL;
    Stream st = {string.buf, string.len / 4, 0, 0};
    const uint64_t low = next_word(&st);
    st.x = low | ((uint64_t)next_word(&st) << 32);
    PyBuffer_Release(&string);
    return Py_BuildValue("(Kn)", (unsigned long long)st.x, st.position);
}

static PyObject *rans_decode(PyObject *self, PyObject *args) {
    Py_buffer string, indexes, cdf, starts, lengths, offsets, out;
    unsigned long long state;
    Py_ssize_t position;
    if (!PyArg_ParseTuple(args, "y*Kny*y*y*y*y*w*", &string, &state, &position, &indexes, &cdf, &starts, &lengths,
                          &offsets, &out)) {
        return NULL;
    }
    PyObject *result = NULL;
    Tables t;
    if (!int32_buffer(&indexes, "indexes") || !int32_buffer(&out, "out")) goto done;
    if (indexes.len != out.len) {
        PyErr_SetString(PyExc_ValueError, "indexes and out differ in length");
        goto done;
    }
    if (!tables_from(&t, &cdf, &starts, &lengths, &offsets)) goto done;
    Stream st = {string.buf, string.len / 4, position, state};
    const Py_ssize_t count = indexes.len / 4;
    const int32_t *idx = indexes.buf;
    int32_t *symbols = out.buf;
    for (Py_ssize_t i = 0; i < count; i++) {
        const int32_t row = idx[i];
        if (!row_of(&t, row, i)) goto done;
        const int32_t *row_cdf = t.cdf + t.starts[row];
        const int32_t max_value = t.lengths[row] - 2;
        const uint32_t cumulative = (uint32_t)(st.x & ((1u << PRECISION) - 1));
        /* the symbol s with cdf[s] <= cumulative < cdf[s + 1] */
        int32_t s = 0;
        int32_t above = max_value + 1;
        while (above - s > 1) {
            const int32_t middle = (s + above) / 2;
            if ((uint32_t)row_cdf[middle] <= cumulative) s = middle;
            else above = middle;
        }
        const uint32_t start = (uint32_t)row_cdf[s];
        const uint32_t frequency = (uint32_t)(row_cdf[s + 1] - row_cdf[s]);
        st.x = frequency * (st.x >> PRECISION) + cumulative - start;
        if (st.x < LOWER_BOUND) st.x = (st.x << 32) | next_word(&st);
        int32_t value = s;
        if (s == max_value) {
            uint32_t chunk = get_bits(&st);
            int32_t chunks = (int32_t)chunk;
            while (chunk == MAX_BYPASS && chunks < 64) {
                chunk = get_bits(&st);
                chunks += (int32_t)chunk;
            }
            if (chunks > 8) {
                PyErr_Format(PyExc_ValueError, "a bypassed value of %d chunks at %zd", chunks, i);
                goto done;
            }
            uint32_t raw = 0;
            for (int32_t j = 0; j < chunks; j++) raw |= get_bits(&st) << (j * BYPASS_BITS);
            const int32_t magnitude = (int32_t)(raw >> 1);
            value = raw & 1 ? -magnitude - 1 : magnitude + max_value;
        }
        symbols[i] = value + t.offsets[row];
    }
    result = Py_BuildValue("(Kn)", (unsigned long long)st.x, st.position);
done:
    PyBuffer_Release(&string);
    PyBuffer_Release(&indexes);
    PyBuffer_Release(&cdf);
    PyBuffer_Release(&starts);
    PyBuffer_Release(&lengths);
    PyBuffer_Release(&offsets);
    PyBuffer_Release(&out);
    return result;
}

static PyMethodDef methods[] = {
    {"encode", rans_encode, METH_VARARGS, "encode(symbols, indexes, cdf, starts, lengths, offsets) -> bytes"},
    {"start", rans_start, METH_VARARGS, "start(string) -> (state, position)"},
    {"decode", rans_decode, METH_VARARGS,
     "decode(string, state, position, indexes, cdf, starts, lengths, offsets, out) -> (state, position)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "codec._rans", "rANS coding on int32 buffers", -1, methods};

PyMODINIT_FUNC PyInit__rans(void) { return PyModule_Create(&module); }
