/* I/O: IDX, PNG, image grids, safetensors, the JSON parser; files written by
 * independent writers (tests/fuzz/make_seeds.py, tests/fixtures/
 * make_safetensors_fixture.py), round trips, and every kind of bad input,
 * each made here in a temporary directory.
 *
 *   test_io              runs the tests
 *   test_io --write F    writes the fixture's tensors with tide to F (for
 *                        make_safetensors_fixture.py --check F) */
#define _POSIX_C_SOURCE 200809L
#include "check.h"
#include "io/io.h"
#include <dirent.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CORPUS TIDE_FIXTURES "/../fuzz/corpus"
static char tmpdir[256];

static const char *tmp(const char *name) {
    static char buf[8][512];
    static int k;
    char *p = buf[k++ % 8];
    snprintf(p, 512, "%s/%s", tmpdir, name);
    return p;
}

static unsigned char *read_file(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    rewind(f);
    unsigned char *p = malloc((size_t)len + 1);
    *n = fread(p, 1, (size_t)len, f);
    fclose(f);
    return p;
}

static void write_file(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    fwrite(data, 1, n, f);
    fclose(f);
}

/* The call failed, and the message names the file and contains `what`. */
static void expect_error(const void *result, const char *path, const char *what, const char *ctx) {
    const char *e = td_last_error();
    CHECK(result == NULL, "%s: expected an error, got a result", ctx);
    CHECK(strstr(e, path) && strstr(e, what), "%s: error should name %s and say \"%s\": %s", ctx, path, what, e);
}

/* ---- IDX ---- */

static double idx_value(const char *name, int i) {
    if (!strcmp(name, "u8_3x4")) return (i * 23) % 256;
    if (!strcmp(name, "i8_2x3")) return i * 25 - 60;
    if (!strcmp(name, "i16_4")) return i * 1000 - 1500;
    if (!strcmp(name, "i32_2x2")) return i * 100000 - 123456;
    if (!strcmp(name, "f32_3")) return i * 0.5 - 0.25;
    return i * 1.25 - 2.0;
}

static void test_idx_seeds(void) {
    static const struct { const char *name; int ndim; int64_t shape[3]; } cases[] = {
        {"u8_3x4", 2, {3, 4}}, {"i8_2x3", 2, {2, 3}}, {"i16_4", 1, {4}},
        {"i32_2x2", 2, {2, 2}}, {"f32_3", 1, {3}}, {"f64_1x2x2", 3, {1, 2, 2}},
    };
    char path[512];
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++)
        for (int gz = 0; gz < 2; gz++) {
            snprintf(path, sizeof path, "%s/idx/%s.idx%s", CORPUS, cases[c].name, gz ? ".gz" : "");
            td_tensor *t = td_idx_load(path);
            CHECK(t != NULL, "idx_load %s: %s", path, td_last_error());
            if (!t) continue;
            float want[16];
            for (int i = 0; i < 16; i++) want[i] = (float)idx_value(cases[c].name, i);
            td_tensor *w = td_from_buffer(cases[c].ndim, cases[c].shape, want);
            check_close(path, t, w, 0, 0);
            td_release(w);
            td_release(t);
        }
}

static void test_idx_errors(void) {
    size_t n, ngz;
    unsigned char *plain = read_file(CORPUS "/idx/u8_3x4.idx", &n);
    unsigned char *gz = read_file(CORPUS "/idx/u8_3x4.idx.gz", &ngz);
    CHECK(plain && gz && n == 24, "idx seeds are there (run tests/fuzz/make_seeds.py)");
    if (!plain || !gz) return;
    const char *p;

    p = tmp("missing.idx");
    expect_error(td_idx_load(p), p, "cannot open", "missing file");

    write_file(p = tmp("short.idx"), plain, 8);
    expect_error(td_idx_load(p), p, "truncated header", "header cut inside the dims");

    write_file(p = tmp("trunc.idx"), plain, 20);
    expect_error(td_idx_load(p), p, "truncated: header says 3x4, file has 8 bytes of data", "data cut");

    unsigned char big[32];
    memcpy(big, plain, 24);
    memset(big + 24, 7, 8);
    write_file(p = tmp("long.idx"), big, 32);
    expect_error(td_idx_load(p), p, "more data than the header", "trailing data");

    unsigned char bad[24];
    memcpy(bad, plain, 24);
    bad[0] = 0x1f, bad[1] = 0x00;
    write_file(p = tmp("magic.idx"), bad, 24);
    expect_error(td_idx_load(p), p, "bad magic", "wrong magic");

    memcpy(bad, plain, 24);
    bad[2] = 0x0A;
    write_file(p = tmp("dtype.idx"), bad, 24);
    expect_error(td_idx_load(p), p, "unknown data type 0x0a", "wrong dtype");

    memcpy(bad, plain, 24);
    bad[3] = 0;
    write_file(p = tmp("dims0.idx"), bad, 24);
    expect_error(td_idx_load(p), p, "0 dimensions", "no dims");
    bad[3] = 7;
    write_file(p = tmp("dims7.idx"), bad, 24);
    expect_error(td_idx_load(p), p, "7 dimensions", "too many dims");

    memcpy(bad, plain, 24);
    bad[4] = 0xFF; /* dim 0 = 0xFF000003: data far too short, nothing allocated for it */
    write_file(p = tmp("huge.idx"), bad, 24);
    expect_error(td_idx_load(p), p, "truncated", "lying dims");

    unsigned char zero_dim[20] = {0, 0, 8, 4, 0, 0, 0, 0, 0x0e, 0x0b, 0x6f, 0, 0xac, 0x52, 0, 0, 0x0b, 0x6f, 0, 0};
    write_file(p = tmp("zerodim.idx"), zero_dim, 20); /* numel 0, but the strides overflow (found by fuzzing) */
    expect_error(td_idx_load(p), p, "overflow", "a zero dim beside huge ones");

    write_file(p = tmp("trunc.idx.gz"), gz, ngz - 12);
    expect_error(td_idx_load(p), p, "gzip", "truncated gzip stream");

    unsigned char *cz = malloc(ngz);
    memcpy(cz, gz, ngz);
    cz[ngz - 6] ^= 0x5A; /* the CRC-32 of the trailer */
    write_file(p = tmp("crc.idx.gz"), cz, ngz);
    expect_error(td_idx_load(p), p, "gzip", "gzip with a bad CRC");
    memcpy(cz, gz, ngz);
    cz[12] ^= 0xFF, cz[13] ^= 0xFF; /* inside the deflate stream */
    write_file(p = tmp("corrupt.idx.gz"), cz, ngz);
    td_tensor *t = td_idx_load(p);
    CHECK(t == NULL && strstr(td_last_error(), p), "corrupt deflate data fails naming the file: %s", td_last_error());
    td_release(t);
    write_file(p = tmp("empty.idx"), "", 0);
    expect_error(td_idx_load(p), p, "too short", "empty file");
    free(cz);
    free(plain);
    free(gz);
}

/* ---- PNG ---- */

static float px(int y, int x, int c) { return (float)((37 * y + 11 * x + 71 * c) % 256) / 255.0f; }

static void check_png_seed(const char *name, int channels, float (*want)(int y, int x, int c)) {
    char path[512], what[600];
    snprintf(path, sizeof path, "%s/png/%s", CORPUS, name);
    td_tensor *t = td_png_load(path);
    CHECK(t != NULL, "png_load %s: %s", path, td_last_error());
    if (!t) return;
    float vals[3 * 5 * 7];
    for (int c = 0; c < channels; c++)
        for (int y = 0; y < 5; y++)
            for (int x = 0; x < 7; x++) vals[(c * 5 + y) * 7 + x] = want(y, x, c);
    td_tensor *w = td_from_buffer(3, SHAPE(channels, 5, 7), vals);
    snprintf(what, sizeof what, "png %s", name);
    check_close(what, t, w, 1e-6f, 0);
    td_release(w);
    td_release(t);
}

static float gray1(int y, int x, int c) { return (float)((x + y) % 2); }
static float gray2(int y, int x, int c) { return (float)((x + 2 * y) % 4) * 85.0f / 255.0f; }
static float palette(int y, int x, int c) {
    int k = (2 * x + y) % 4;
    int rgb[3] = {60 * k, 255 - 60 * k, 17 * k};
    return (float)rgb[c] / 255.0f;
}

static void test_png_seeds(void) {
    check_png_seed("gray8.png", 1, px);
    check_png_seed("graya8.png", 1, px);
    check_png_seed("rgb8.png", 3, px);
    check_png_seed("rgba8.png", 3, px);
    check_png_seed("rgb16.png", 3, px);
    check_png_seed("rgb8_sub.png", 3, px);
    check_png_seed("rgb8_adam7.png", 3, px);
    check_png_seed("gray1.png", 1, gray1);
    check_png_seed("gray2.png", 1, gray2);
    check_png_seed("palette.png", 3, palette);
}

static void test_png_roundtrip(void) {
    uint64_t s = 3;
    const int64_t shapes[3][3] = {{6, 5}, {1, 4, 9}, {3, 7, 2}};
    for (int k = 0; k < 3; k++) {
        int nd = k == 0 ? 2 : 3;
        td_tensor *img = check_rand(nd, shapes[k], -0.2f, 1.2f, &s); /* out of range: clamped */
        const char *p = tmp("round.png");
        CHECK(td_png_save(p, img) == 0, "png_save: %s", td_last_error());
        td_tensor *back = td_png_load(p);
        td_tensor *want = td_clamp(img, 0.0f, 1.0f);
        int64_t cshape[3] = {nd == 2 ? 1 : shapes[k][0], shapes[k][nd - 2], shapes[k][nd - 1]};
        td_tensor *w3 = td_reshape(want, 3, cshape);
        check_close("png round trip (1/255 steps)", back, w3, 0.5f / 255.0f + 1e-6f, 0);
        td_release(w3);
        td_release(want);
        td_release(back);
        td_release(img);
    }
    /* a transposed (non-contiguous) image saves as its values */
    td_tensor *base = check_rand(2, SHAPE(4, 6), 0, 1, &s), *tr = td_transpose(base, 0, 1);
    const char *p = tmp("transposed.png");
    CHECK(td_png_save(p, tr) == 0, "png_save of a view: %s", td_last_error());
    td_tensor *back = td_png_load(p), *w = td_reshape(tr, 3, SHAPE(1, 6, 4));
    check_close("png of a transposed view", back, w, 0.5f / 255.0f + 1e-6f, 0);
    td_release(back), td_release(w), td_release(tr), td_release(base);
}

static uint32_t crc32_of(const unsigned char *p, size_t n) {
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1)));
    }
    return ~c;
}

static void test_png_errors(void) {
    const char *p;
    td_tensor *bad = td_zeros(3, SHAPE(2, 4, 4));
    CHECK(td_png_save(p = tmp("x.png"), bad) == -1 && strstr(td_last_error(), "[2,4,4]") && strstr(td_last_error(), p),
          "two-channel image is refused naming path and shape: %s", td_last_error());
    td_release(bad);
    bad = td_zeros(1, SHAPE(4));
    CHECK(td_png_save(p, bad) == -1 && strstr(td_last_error(), "[4]"), "1-D image refused: %s", td_last_error());
    td_release(bad);
    td_tensor *ok = td_zeros(2, SHAPE(2, 2));
    CHECK(td_png_save(p = tmp("no/such/dir/x.png"), ok) == -1 && strstr(td_last_error(), p),
          "unwritable path fails naming it: %s", td_last_error());
    td_release(ok);

    p = tmp("missing.png");
    expect_error(td_png_load(p), p, "cannot open", "missing png");
    write_file(p = tmp("text.png"), "hello, not a png", 16);
    expect_error(td_png_load(p), p, "not a PNG", "bad signature");

    size_t n;
    unsigned char *png = read_file(CORPUS "/png/rgb8.png", &n);
    if (!png) return;
    /* IHDR (CRC fixed) claims 40000x40000: more than the file can hold, refused before allocating */
    unsigned char *liar = malloc(n);
    memcpy(liar, png, n);
    const unsigned char side[4] = {0, 0, 0x9C, 0x40};
    memcpy(liar + 16, side, 4);
    memcpy(liar + 20, side, 4);
    uint32_t crc = crc32_of(liar + 12, 17);
    for (int i = 0; i < 4; i++) liar[29 + i] = (unsigned char)(crc >> (24 - 8 * i));
    write_file(p = tmp("liar.png"), liar, n);
    expect_error(td_png_load(p), p, "40000x40000 image has more than", "IHDR beyond the pixel limit");
    const unsigned char w32k[4] = {0, 0, 0x80, 0}, h4k[4] = {0, 0, 0x10, 0}; /* 32768x4096 = 2^27 pixels */
    memcpy(liar + 16, w32k, 4);
    memcpy(liar + 20, h4k, 4);
    crc = crc32_of(liar + 12, 17);
    for (int i = 0; i < 4; i++) liar[29 + i] = (unsigned char)(crc >> (24 - 8 * i));
    write_file(p = tmp("liar2.png"), liar, n);
    expect_error(td_png_load(p), p, "32768x4096 image cannot come from a file of", "IHDR larger than the data");
    free(liar);
    write_file(p = tmp("trunc.png"), png, n / 2);
    expect_error(td_png_load(p), p, "png_load", "truncated png");
    unsigned char *c = malloc(n);
    memcpy(c, png, n);
    c[20] ^= 0x40; /* inside IHDR: the CRC no longer matches */
    write_file(p = tmp("crc.png"), c, n);
    expect_error(td_png_load(p), p, "CRC", "IHDR CRC error");
    memcpy(c, png, n);
    c[45] ^= 0xFF, c[46] ^= 0xFF; /* inside the IDAT zlib stream */
    write_file(p = tmp("idat.png"), c, n);
    td_tensor *t = td_png_load(p);
    CHECK(t == NULL && strstr(td_last_error(), p), "corrupt IDAT fails naming the file: %s", td_last_error());
    td_release(t);
    free(c);
    free(png);
}

/* ---- image grid ---- */

static void test_grid(void) {
    float v[5 * 2 * 2 * 3];
    for (int i = 0; i < 60; i++) v[i] = (float)i;
    td_tensor *imgs = td_from_buffer(4, SHAPE(5, 2, 2, 3), v);
    td_tensor *g = td_image_grid(imgs, 2, 1, -1.0f);
    CHECK(g && g->ndim == 3 && g->shape[0] == 2 && g->shape[1] == 3 * 3 + 1 && g->shape[2] == 2 * 4 + 1,
          "grid of 5 [2,2,3] images in 2 columns with pad 1 is [2,10,9]");
    if (g) {
        int bad = 0, pads = 0;
        for (int c = 0; c < 2; c++)
            for (int y = 0; y < 10; y++)
                for (int x = 0; x < 9; x++) {
                    float got = g->data[(c * 10 + y) * 9 + x], want = -1.0f;
                    int i = (y - 1) / 3 * 2 + (x - 1) / 4, yy = (y - 1) % 3, xx = (x - 1) % 4;
                    if (y >= 1 && x >= 1 && yy < 2 && xx < 3 && i < 5) want = v[((i * 2 + c) * 2 + yy) * 3 + xx];
                    bad += got != want;
                    pads += want == -1.0f;
                }
        CHECK(bad == 0, "grid: %d misplaced values", bad);
        CHECK(pads == 2 * (90 - 5 * 6), "grid: pad cells counted");
    }
    td_release(g);
    g = td_image_grid(imgs, 0, 1, 0);
    CHECK(!g && strstr(td_last_error(), "ncol 0"), "ncol 0 refused: %s", td_last_error());
    td_tensor *three = td_zeros(3, SHAPE(2, 3, 3));
    g = td_image_grid(three, 2, 1, 0);
    CHECK(!g && strstr(td_last_error(), "[2,3,3]"), "3-D input refused naming shape: %s", td_last_error());
    td_release(three);
    /* grid -> png -> load keeps the layout */
    td_tensor *small = td_mul_scalar(imgs, 1.0f / 64.0f);
    g = td_image_grid(small, 3, 2, 1.0f);
    td_tensor *rgb = g ? td_narrow(g, 0, 0, 1) : NULL;
    const char *p = tmp("grid.png");
    CHECK(rgb && td_png_save(p, rgb) == 0, "grid png: %s", td_last_error());
    td_tensor *back = td_png_load(p);
    if (rgb && back) check_close("grid through png", back, rgb, 0.5f / 255.0f + 1e-6f, 0);
    td_release(back), td_release(rgb), td_release(g), td_release(small), td_release(imgs);
}

/* ---- JSON ---- */

static void test_json(void) {
    static const char *good[] = {
        "{}", " [1, -2.5e3, 0, \"x\", true, false, null] ", "{\"a\":{\"b\":[[]]}}", "\"\\u00e9\\ud83d\\ude00\\n\"",
        "\"caf\xc3\xa9\"", "-0", "0.5", "1E+2", "9223372036854775807",
    };
    static const char *bad[] = {
        "", "{", "[1,]", "{\"a\":1,}", "{\"a\" 1}", "{a:1}", "[01]", "[1.]", "[.5]", "[1e]", "NaN", "[Infinity]",
        "\"\\x\"", "\"\\ud800\"", "\"\\udc00\"", "\"\x01\"", "\"\xc3\"", "\"\xed\xa0\x80\"", "\"\xc0\xaf\"",
        "{\"a\":1,\"a\":2}", "[1] x", "tru", "nul", "{\"k\":\"v\"", "\"abc",
    };
    char err[160];
    for (size_t i = 0; i < sizeof good / sizeof *good; i++) {
        js_value *v = js_parse(good[i], strlen(good[i]), err, sizeof err);
        CHECK(v != NULL, "json %s should parse: %s", good[i], err);
        js_free(v);
    }
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        js_value *v = js_parse(bad[i], strlen(bad[i]), err, sizeof err);
        CHECK(v == NULL && strstr(err, "offset"), "json %s should fail with an offset: %s", bad[i], v ? "(parsed)" : err);
        js_free(v);
    }
    char deep[300];
    memset(deep, '[', 150);
    memset(deep + 150, ']', 150);
    js_value *v = js_parse(deep, 300, err, sizeof err);
    CHECK(v == NULL && strstr(err, "deeper"), "150 nested arrays refused: %s", err);
    const char *txt = "{\"n\":[18446744073709551615, 12, -3, 2.5], \"s\":\"\\u00e9\\ud83d\\ude00\"}";
    v = js_parse(txt, strlen(txt), err, sizeof err);
    const js_value *nums = js_get(v, "n"), *s = js_get(v, "s");
    CHECK(nums && !nums->items[0].is_uint && nums->items[1].is_uint && nums->items[1].u == 12 &&
              !nums->items[2].is_uint && !nums->items[3].is_uint && nums->items[3].d == 2.5,
          "json numbers: overflow, whole, negative and fractional told apart");
    CHECK(s && !strcmp(s->s, "\xc3\xa9\xf0\x9f\x98\x80"), "json \\u escapes and surrogate pairs decode to UTF-8");
    js_free(v);
}

/* ---- safetensors ---- */

static const char *FIX_META =
    "{\"format\":\"pt\",\"note\":\"written by make_safetensors_fixture.py\",\"quote\":\"a \\\"b\\\" \\\\ c\","
    "\"unicode\":\"caf\xc3\xa9 \xe2\x9c\x93\"}";
static const char *fix_names[] = {"weight", "bytes", "half", "bf", "ids", "big", "dbl", "scalar", "empty"};
static const char *fix_dtypes[] = {"F32", "U8", "F16", "BF16", "I32", "I64", "F64", "F32", "F32"};

/* The fixture's tensors, as literally written in make_safetensors_fixture.py. */
static void fixture_tensors(td_tensor **t) {
    t[0] = td_from_buffer(2, SHAPE(2, 3), (float[]){-1.5f, 0.0f, 0.25f, 3.75f, 0.001f, -200000.0f});
    t[1] = td_from_buffer(3, SHAPE(2, 2, 2), (float[]){0, 1, 2, 127, 128, 200, 254, 255});
    t[2] = td_from_buffer(1, SHAPE(5), (float[]){1.0f, -2.5f, 65504.0f, ldexpf(1, -14), ldexpf(1, -24)});
    t[3] = td_from_buffer(1, SHAPE(3), (float[]){1.0f, -3.140625f, 0.0078125f});
    t[4] = td_from_buffer(1, SHAPE(3), (float[]){-7, 0, 123456});
    t[5] = td_from_buffer(1, SHAPE(2), (float[]){-1, 16777216});
    t[6] = td_from_buffer(2, SHAPE(2, 1), (float[]){0.125f, -2.0f});
    t[7] = td_scalar(42.0f);
    t[8] = td_zeros(2, SHAPE(0, 3));
}

static void test_st_fixture(void) {
    const char *path = TIDE_FIXTURES "/safetensors/fixture.safetensors";
    td_st_file *f = td_st_open(path);
    CHECK(f != NULL, "open fixture: %s", td_last_error());
    if (!f) return;
    CHECK(td_st_count(f) == 9, "fixture has 9 tensors, got %d", td_st_count(f));
    for (int i = 0; i < td_st_count(f) && i < 9; i++)
        CHECK(!strcmp(td_st_name(f, i), fix_names[i]), "tensor %d is %s (data order), got %s", i, fix_names[i], td_st_name(f, i));
    td_tensor *want[9];
    fixture_tensors(want);
    for (int i = 0; i < 9; i++) {
        td_tensor *got = td_st_get(f, fix_names[i]);
        CHECK(td_st_dtype(f, fix_names[i]) && !strcmp(td_st_dtype(f, fix_names[i]), fix_dtypes[i]), "dtype of %s", fix_names[i]);
        check_close(fix_names[i], got, want[i], 0, 0);
        td_release(got);
        td_release(want[i]);
    }
    int64_t shape[TD_MAX_DIMS];
    CHECK(td_st_shape(f, "bytes", shape) == 3 && shape[0] == 2 && shape[2] == 2, "shape of bytes");
    CHECK(td_st_shape(f, "nope", shape) == -1 && td_st_dtype(f, "nope") == NULL, "unknown name: -1 and NULL");
    CHECK(!strcmp(td_st_metadata(f, "format"), "pt") && !strcmp(td_st_metadata(f, "quote"), "a \"b\" \\ c") &&
              !strcmp(td_st_metadata(f, "unicode"), "caf\xc3\xa9 \xe2\x9c\x93") && !td_st_metadata(f, "missing"),
          "metadata values");
    int seen = 0;
    for (int i = 0; i < td_st_metadata_count(f); i++) seen += !strcmp(td_st_metadata_key(f, i), "quote");
    CHECK(td_st_metadata_count(f) == 4 && seen == 1 && !td_st_metadata_key(f, 4) && !td_st_metadata_key(f, -1),
          "metadata keys: 4, 'quote' among them, NULL out of range");
    td_tensor *rows = td_st_get_rows(f, "bytes", 1, 1);
    td_tensor *w = td_from_buffer(3, SHAPE(1, 2, 2), (float[]){128, 200, 254, 255});
    check_close("rows [1,2) of bytes", rows, w, 0, 0);
    td_release(rows), td_release(w);
    rows = td_st_get_rows(f, "bytes", 1, 2);
    CHECK(!rows && strstr(td_last_error(), "rows [1, 3)") && strstr(td_last_error(), path), "rows past the end: %s", td_last_error());
    rows = td_st_get(f, "nope");
    CHECK(!rows && strstr(td_last_error(), "no tensor named \"nope\""), "missing tensor: %s", td_last_error());
    td_st_close(f);
}

static int write_fixture_with_tide(const char *path) {
    td_tensor *t[9];
    fixture_tensors(t);
    int rc = td_safetensors_save_as(path, 9, fix_names, t, fix_dtypes, FIX_META);
    for (int i = 0; i < 9; i++) td_release(t[i]);
    return rc;
}

/* tide writes the fixture's tensors byte for byte as the Python writer did. */
static void test_st_golden(void) {
    const char *p = tmp("golden.safetensors");
    CHECK(write_fixture_with_tide(p) == 0, "save: %s", td_last_error());
    size_t na, nb;
    unsigned char *a = read_file(p, &na), *b = read_file(TIDE_FIXTURES "/safetensors/fixture.safetensors", &nb);
    size_t at = 0;
    while (a && b && at < na && at < nb && a[at] == b[at]) at++;
    CHECK(a && b && na == nb && at == na, "tide's file equals the Python-written fixture (%zu vs %zu bytes, first difference at %zu)", na, nb, at);
    free(a);
    free(b);
}

static void test_st_roundtrip(void) {
    uint64_t s = 11;
    td_tensor *base = check_rand(3, SHAPE(4, 3, 5), -3, 3, &s);
    td_tensor *view = td_transpose(base, 0, 2); /* [5,3,4], non-contiguous */
    td_tensor *u8 = td_from_buffer(2, SHAPE(2, 3), (float[]){0, 9, 17, 100, 254, 255});
    td_tensor *i64 = td_from_buffer(1, SHAPE(3), (float[]){-16777216, 3, 16777216});
    td_tensor *half = check_rand(2, SHAPE(3, 4), -70000, 70000, &s);
    td_tensor *ts[] = {view, u8, i64, half, half, base};
    const char *names[] = {"view", "u8", "i64", "half", "bf16", "f64"};
    const char *dts[] = {"F32", "U8", "I64", "F16", "BF16", "F64"};
    const char *p = tmp("round.safetensors");
    const char *meta = "{\"escapes\":\"tab\\t nl\\n \\u0001 \\\"q\\\"\", \"empty\":\"\"}";
    CHECK(td_safetensors_save_as(p, 6, names, ts, dts, meta) == 0, "save_as: %s", td_last_error());
    td_st_file *f = td_st_open(p);
    CHECK(f != NULL, "reopen: %s", td_last_error());
    if (f) {
        td_tensor *got = td_st_get(f, "view");
        check_close("F32 of a transposed view", got, view, 0, 0);
        td_release(got);
        got = td_st_get(f, "u8");
        check_close("U8", got, u8, 0, 0);
        td_release(got);
        got = td_st_get(f, "i64");
        check_close("I64", got, i64, 0, 0);
        td_release(got);
        got = td_st_get(f, "f64");
        check_close("F64", got, base, 0, 0);
        td_release(got);
        /* F16: nearest half (relative step 2^-11) or inf beyond 65520 */
        got = td_st_get(f, "half");
        int bad = 0;
        for (int64_t i = 0; got && i < got->numel; i++) {
            float x = half->data[i], y = got->data[i];
            bad += fabsf(x) >= 65520.0f ? !(isinf(y) && (y > 0) == (x > 0)) : !(fabsf(y - x) <= fabsf(x) * 0x1p-11f);
        }
        CHECK(got && bad == 0, "F16 rounding: %d values off", bad);
        td_release(got);
        got = td_st_get(f, "bf16");
        check_close("BF16 (8 bits of mantissa)", got, half, 0, 0x1p-8f);
        td_release(got);
        CHECK(td_st_metadata(f, "escapes") && !strcmp(td_st_metadata(f, "escapes"), "tab\t nl\n \x01 \"q\"") &&
                  !strcmp(td_st_metadata(f, "empty"), ""),
              "metadata escapes survive");
        td_st_close(f);
    }
    /* F16 exactness on the edges: subnormals, max, ties to even, overflow */
    float edge[] = {0x1p-24f, 0x1p-25f, 0x1.8p-24f, 65504.0f, 65519.0f, 65520.0f, 1.0f + 0x1p-11f, 1.0f + 0x3p-11f, -0.0f};
    float want[] = {0x1p-24f, 0.0f, 0x2p-24f, 65504.0f, 65504.0f, INFINITY, 1.0f, 1.0f + 0x4p-11f, -0.0f};
    td_tensor *e = td_from_buffer(1, SHAPE(9), edge), *we = td_from_buffer(1, SHAPE(9), want);
    const char *hn[] = {"h"}, *hd[] = {"F16"};
    CHECK(td_safetensors_save_as(p, 1, hn, &e, hd, NULL) == 0, "save F16 edges: %s", td_last_error());
    f = td_st_open(p);
    td_tensor *got = f ? td_st_get(f, "h") : NULL;
    for (int i = 0; got && i < 9; i++)
        CHECK(memcmp(&got->data[i], &want[i], 4) == 0, "F16 edge case %d: %a -> %a, expected %a", i, edge[i], got->data[i], want[i]);
    CHECK(got != NULL, "F16 edges reload: %s", td_last_error());
    td_release(got), td_release(e), td_release(we);
    td_st_close(f);
    /* plain F32 save of no tensors and of one */
    CHECK(td_safetensors_save(p, 0, NULL, NULL, NULL) == 0, "an empty file: %s", td_last_error());
    f = td_st_open(p);
    CHECK(f && td_st_count(f) == 0, "empty file reopens with 0 tensors: %s", td_last_error());
    td_st_close(f);
    td_release(view), td_release(base), td_release(u8), td_release(i64), td_release(half);
}

static int count_tmp_files(void) {
    DIR *d = opendir(tmpdir);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)))
        n += strstr(e->d_name, ".tmp.") != NULL;
    if (d) closedir(d);
    return n;
}

static void test_st_save_errors(void) {
    const char *p = tmp("keep.safetensors");
    td_tensor *a = td_from_buffer(1, SHAPE(2), (float[]){1, 2}), *frac = td_from_buffer(1, SHAPE(2), (float[]){3, 2.5f});
    const char *n1[] = {"a"}, *u8[] = {"U8"};
    CHECK(td_safetensors_save(p, 1, n1, &a, NULL) == 0, "save: %s", td_last_error());
    int rc = td_safetensors_save_as(p, 1, n1, &frac, u8, NULL);
    CHECK(rc == -1 && strstr(td_last_error(), "element 1 is 2.5") && strstr(td_last_error(), p), "2.5 as U8 refused: %s", td_last_error());
    td_tensor *big = td_from_buffer(1, SHAPE(1), (float[]){256});
    CHECK(td_safetensors_save_as(p, 1, n1, &big, u8, NULL) == -1, "256 as U8 refused");
    td_tensor *nan = td_from_buffer(1, SHAPE(1), (float[]){NAN});
    const char *i32[] = {"I32"};
    CHECK(td_safetensors_save_as(p, 1, n1, &nan, i32, NULL) == -1, "NaN as I32 refused");
    td_st_file *f = td_st_open(p);
    td_tensor *old = f ? td_st_get(f, "a") : NULL;
    check_close("a failed save leaves the old file whole", old, a, 0, 0);
    td_release(old);
    td_st_close(f);
    CHECK(count_tmp_files() == 0, "no temporary file left behind");
    const char *two[] = {"x", "x"}, *meta_bad = "{\"k\": 1}";
    td_tensor *pair[] = {a, a};
    CHECK(td_safetensors_save(p, 2, two, pair, NULL) == -1 && strstr(td_last_error(), "two tensors named \"x\""), "duplicate names: %s", td_last_error());
    const char *mn[] = {"__metadata__"};
    CHECK(td_safetensors_save(p, 1, mn, &a, NULL) == -1, "the name __metadata__ is refused");
    CHECK(td_safetensors_save(p, 1, n1, &a, meta_bad) == -1 && strstr(td_last_error(), "string values"), "non-string metadata: %s", td_last_error());
    CHECK(td_safetensors_save(p, 1, n1, &a, "{oops}") == -1 && strstr(td_last_error(), "not valid JSON"), "bad metadata JSON: %s", td_last_error());
    const char *badutf[] = {"\xff"};
    CHECK(td_safetensors_save(p, 1, badutf, &a, NULL) == -1 && strstr(td_last_error(), "UTF-8"), "name that is not UTF-8: %s", td_last_error());
    const char *f99[] = {"F99"};
    CHECK(td_safetensors_save_as(p, 1, n1, &a, f99, NULL) == -1 && strstr(td_last_error(), "F99"), "unknown dtype: %s", td_last_error());
    CHECK(count_tmp_files() == 0, "still no temporary file left behind");
    td_release(a), td_release(frac), td_release(big), td_release(nan);
}

/* A file with this header text and data_len bytes of data; hlen_override
 * replaces the length field when nonzero. */
static const char *st_file(const char *name, const char *header, size_t data_len, uint64_t hlen_override) {
    const char *p = tmp(name);
    size_t h = strlen(header);
    unsigned char *buf = calloc(1, 8 + h + data_len);
    uint64_t len = hlen_override ? hlen_override : h;
    for (int i = 0; i < 8; i++) buf[i] = (unsigned char)(len >> (8 * i));
    memcpy(buf + 8, header, h);
    write_file(p, buf, 8 + h + data_len);
    free(buf);
    return p;
}

static void bad_st(const char *name, const char *header, size_t data_len, uint64_t hlen, const char *what) {
    const char *p = st_file(name, header, data_len, hlen);
    td_st_file *f = td_st_open(p);
    expect_error(f, p, what, name);
    td_st_close(f);
}

#define T(dt, shape, b, e) "{\"dtype\":\"" dt "\",\"shape\":" shape ",\"data_offsets\":[" #b "," #e "]}"

static void test_st_bad_files(void) {
    const char *p;
    p = tmp("missing.safetensors");
    expect_error(td_st_open(p), p, "cannot open", "missing file");
    expect_error(td_st_open(tmpdir), tmpdir, "not a regular file", "a directory");
    expect_error(td_png_load(tmpdir), tmpdir, "not a regular file", "a directory as png");
    td_tensor *dir = td_idx_load(tmpdir);
    CHECK(!dir && strstr(td_last_error(), tmpdir), "a directory as idx fails naming it: %s", td_last_error());
    write_file(p = tmp("short.safetensors"), "abc", 3);
    expect_error(td_st_open(p), p, "too short", "3-byte file");
    bad_st("hlen_huge", "{}", 0, 1ULL << 40, "not sane");
    bad_st("hlen_past_end", "{\"a\":" T("F32", "[1]", 0, 4) "}", 4, 1000, "runs past the end");
    bad_st("hlen_tiny", "{}", 0, 1, "not sane");
    bad_st("not_json", "{\"a\":}", 0, 0, "not valid JSON");
    bad_st("trailing_comma", "{\"a\":" T("F32", "[1]", 0, 4) ",}", 4, 0, "not valid JSON");
    bad_st("not_object", "[1,2]   ", 0, 0, "not a JSON object");
    bad_st("entry_not_object", "{\"a\":[0,4]}", 4, 0, "not an object");
    bad_st("missing_field", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, 0, "needs dtype, shape and data_offsets");
    bad_st("extra_field", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"x\":1}}", 4, 0, "unknown field \"x\"");
    bad_st("bad_dtype", "{\"a\":" T("F8", "[1]", 0, 1) "}", 1, 0, "unsupported dtype F8");
    bad_st("neg_shape", "{\"a\":" T("F32", "[-1]", 0, 4) "}", 4, 0, "shape entry 0");
    bad_st("float_shape", "{\"a\":" T("F32", "[1.0]", 0, 4) "}", 4, 0, "shape entry 0");
    bad_st("seven_dims", "{\"a\":" T("F32", "[1,1,1,1,1,1,1]", 0, 4) "}", 4, 0, "at most 6");
    bad_st("huge_shape", "{\"a\":" T("U8", "[4294967296,4294967296]", 0, 1) "}", 1, 0, "overflows");
    bad_st("zero_dim_overflow", "{\"a\":" T("U8", "[0,4294967296,4294967296]", 0, 0) "}", 0, 0, "overflows");
    bad_st("size_lie", "{\"a\":" T("F32", "[3]", 0, 8) "}", 8, 0, "8 bytes for 3 F32 values");
    bad_st("offset_past_end", "{\"a\":" T("F32", "[2]", 0, 8) "}", 4, 0, "outside the 4 bytes of data");
    bad_st("offsets_reversed", "{\"a\":" T("U8", "[0]", 4, 0) "}", 4, 0, "data_offsets [4, 0]");
    bad_st("overlap", "{\"a\":" T("F32", "[2]", 0, 8) ",\"b\":" T("F32", "[1]", 4, 8) "}", 8, 0, "overlaps");
    bad_st("gap", "{\"a\":" T("F32", "[1]", 0, 4) ",\"b\":" T("F32", "[1]", 8, 12) "}", 12, 0, "gap of 4 bytes");
    bad_st("trailing_data", "{\"a\":" T("F32", "[1]", 0, 4) "}", 12, 0, "8 bytes of data after the last tensor");
    bad_st("dup_key", "{\"a\":" T("F32", "[1]", 0, 4) ",\"a\":" T("F32", "[1]", 4, 8) "}", 8, 0, "duplicate key");
    bad_st("meta_not_string", "{\"__metadata__\":{\"k\":3}}", 0, 0, "is not a string");
    bad_st("meta_not_object", "{\"__metadata__\":\"x\"}", 0, 0, "__metadata__ is not an object");
    bad_st("offsets_not_pair", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 4, 0, "[begin, end]");
    bad_st("bad_utf8_name", "{\"\xc3(\":" T("F32", "[1]", 0, 4) "}", 4, 0, "UTF-8");
    /* a file cut after open: the read fails cleanly */
    p = st_file("cut_later", "{\"a\":" T("F32", "[4]", 0, 16) "}", 16, 0);
    td_st_file *f = td_st_open(p);
    CHECK(f != NULL, "valid before the cut: %s", td_last_error());
    if (truncate(p, 20) == 0 && f) {
        td_tensor *t = td_st_get(f, "a");
        expect_error(t, p, "ends early", "file truncated after open");
        td_release(t);
    }
    td_st_close(f);
}

static void remove_tmpdir(void) {
    DIR *d = opendir(tmpdir);
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (e->d_name[0] != '.') unlink(tmp(e->d_name));
    if (d) closedir(d);
    rmdir(tmpdir);
}

int main(int argc, char **argv) {
    if (argc == 3 && !strcmp(argv[1], "--write")) {
        int rc = write_fixture_with_tide(argv[2]);
        if (rc) fprintf(stderr, "%s\n", td_last_error());
        return rc ? 1 : 0;
    }
    const char *base = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    snprintf(tmpdir, sizeof tmpdir, "%s/tide-test-io-XXXXXX", base);
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    test_idx_seeds();
    test_idx_errors();
    test_png_seeds();
    test_png_roundtrip();
    test_png_errors();
    test_grid();
    test_json();
    test_st_fixture();
    test_st_golden();
    test_st_roundtrip();
    test_st_save_errors();
    test_st_bad_files();
    remove_tmpdir();
    CHECK(td_live_tensors() == 0, "leaked %lld tensors", (long long)td_live_tensors());
    return check_summary();
}
