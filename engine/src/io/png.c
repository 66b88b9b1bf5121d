/* png.c - PNG through libpng, and image grids.
 *
 * libpng reports errors by longjmp from its error callback. That is the only
 * setjmp in the engine: png_decode / png_encode set it and call nothing but
 * libpng after it; every resource lives in a png_ctx owned by the caller,
 * which frees it whichever way the call ended. No longjmp crosses a tide
 * frame, and none leaves the engine. */
#include "io.h"
#include <errno.h>
#include <math.h>
#include <png.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define PNG_MAX_SIDE (1u << 20)
#define PNG_MAX_PIXELS (INT64_C(1) << 27) /* 134M pixels: 1.6 GB as float RGB */

typedef struct {
    const char *path;
    FILE *fp;
    png_structp png;
    png_infop info;
    unsigned char *pixels;    /* h rows of w*channels 8-bit samples */
    png_bytep *rows;
    uint32_t w, h;
    int channels;
    int64_t file_size;
    char msg[200];
} png_ctx;

static void on_error(png_structp png, png_const_charp msg) {
    png_ctx *c = png_get_error_ptr(png);
    snprintf(c->msg, sizeof c->msg, "%s", msg ? msg : "libpng error");
    png_longjmp(png, 1);
}

static void on_warning(png_structp png, png_const_charp msg) { (void)png, (void)msg; }

static int alloc_rows(png_ctx *c, size_t rowbytes) {
    c->pixels = malloc(rowbytes * c->h + 1);
    c->rows = malloc(sizeof *c->rows * c->h + 1);
    if (!c->pixels || !c->rows) return -1;
    for (uint32_t y = 0; y < c->h; y++) c->rows[y] = c->pixels + (size_t)y * rowbytes;
    return 0;
}

/* Only libpng calls after the setjmp; errors leave a message in c->msg. */
static int png_decode(png_ctx *c) {
    c->png = png_create_read_struct(PNG_LIBPNG_VER_STRING, c, on_error, on_warning);
    if (!c->png || !(c->info = png_create_info_struct(c->png))) {
        snprintf(c->msg, sizeof c->msg, "out of memory");
        return -1;
    }
    if (setjmp(png_jmpbuf(c->png))) return -1;
    png_set_user_limits(c->png, PNG_MAX_SIDE, PNG_MAX_SIDE);
    png_init_io(c->png, c->fp);
    png_read_info(c->png, c->info);
    c->w = png_get_image_width(c->png, c->info);
    c->h = png_get_image_height(c->png, c->info);
    int type = png_get_color_type(c->png, c->info), depth = png_get_bit_depth(c->png, c->info);
    int raw_channels = png_get_channels(c->png, c->info);
    /* deflate expands at most ~1032:1: a header whose rows cannot come from
     * this file is a lie, caught before allocating for it */
    int64_t raw = (int64_t)c->h * (((int64_t)c->w * depth * raw_channels + 7) / 8 + 1);
    if ((int64_t)c->w * c->h > PNG_MAX_PIXELS) {
        snprintf(c->msg, sizeof c->msg, "%ux%u image has more than %lld pixels", c->w, c->h, (long long)PNG_MAX_PIXELS);
        return -1;
    }
    if (raw > 1032 * c->file_size + 4096) {
        snprintf(c->msg, sizeof c->msg, "%ux%u image cannot come from a file of %lld bytes", c->w, c->h, (long long)c->file_size);
        return -1;
    }
    if (type == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(c->png);
    if (type == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(c->png);
    if (depth == 16) png_set_scale_16(c->png);
    if ((type & PNG_COLOR_MASK_ALPHA) || png_get_valid(c->png, c->info, PNG_INFO_tRNS)) png_set_strip_alpha(c->png);
    png_set_interlace_handling(c->png);
    png_read_update_info(c->png, c->info);
    c->channels = png_get_channels(c->png, c->info);
    if (c->channels != 1 && c->channels != 3) {
        snprintf(c->msg, sizeof c->msg, "unexpected %d channels after conversion", c->channels);
        return -1;
    }
    if (alloc_rows(c, png_get_rowbytes(c->png, c->info))) {
        snprintf(c->msg, sizeof c->msg, "out of memory for %ux%u pixels", c->w, c->h);
        return -1;
    }
    png_read_image(c->png, c->rows);
    png_read_end(c->png, NULL);
    return 0;
}

/* Interleaved 8-bit samples [H,W,C] -> [C,H,W] floats in [0,1]. */
static void bytes_to_chw(const unsigned char *src, float *dst, int64_t c, int64_t h, int64_t w) {
    for (int64_t k = 0; k < c; k++)
        for (int64_t i = 0; i < h * w; i++) dst[k * h * w + i] = src[i * c + k] * (1.0f / 255.0f);
}

td_tensor *td_png_load(const char *path) {
    if (!path) return td_fail("png_load: NULL path");
    png_ctx c = {.path = path};
    struct stat st;
    errno = 0;
    if (!(c.fp = fopen(path, "rb"))) return td_fail("png_load: %s: cannot open: %s", path, strerror(errno));
    if (fstat(fileno(c.fp), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(c.fp);
        return td_fail("png_load: %s: not a regular file", path);
    }
    c.file_size = st.st_size;
    unsigned char sig[8];
    td_tensor *out = NULL;
    if (fread(sig, 1, 8, c.fp) != 8 || png_sig_cmp(sig, 0, 8) != 0) {
        td_fail("png_load: %s: not a PNG file (bad signature)", path);
    } else {
        rewind(c.fp);
        if (png_decode(&c) != 0) {
            td_fail("png_load: %s: %s", path, c.msg);
        } else {
            out = td_new(3, (int64_t[]){c.channels, c.h, c.w});
            if (out) bytes_to_chw(c.pixels, out->data, c.channels, c.h, c.w);
        }
    }
    png_destroy_read_struct(c.png ? &c.png : NULL, c.info ? &c.info : NULL, NULL);
    free(c.rows);
    free(c.pixels);
    fclose(c.fp);
    return out;
}

static int png_encode(png_ctx *c) {
    c->png = png_create_write_struct(PNG_LIBPNG_VER_STRING, c, on_error, on_warning);
    if (!c->png || !(c->info = png_create_info_struct(c->png))) {
        snprintf(c->msg, sizeof c->msg, "out of memory");
        return -1;
    }
    if (setjmp(png_jmpbuf(c->png))) return -1;
    png_init_io(c->png, c->fp);
    png_set_IHDR(c->png, c->info, c->w, c->h, 8, c->channels == 1 ? PNG_COLOR_TYPE_GRAY : PNG_COLOR_TYPE_RGB,
                 PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(c->png, c->info);
    png_write_image(c->png, c->rows);
    png_write_end(c->png, NULL);
    return 0;
}

static unsigned char to_byte(float v) {
    if (!(v > 0.0f)) return 0; /* also NaN */
    if (v >= 1.0f) return 255;
    return (unsigned char)lrintf(v * 255.0f);
}

int td_png_save(const char *path, const td_tensor *img) {
    char s[TD_SHAPE_BUF];
    if (!path || !img) return td_failc("png_save: NULL argument");
    int nd = img->ndim;
    if ((nd != 2 && nd != 3) || (nd == 3 && img->shape[0] != 1 && img->shape[0] != 3))
        return td_failc("png_save: %s: image %s must be [H,W], [1,H,W] or [3,H,W]", path, td_shape_str(img, s));
    int64_t ch = nd == 3 ? img->shape[0] : 1, h = img->shape[nd - 2], w = img->shape[nd - 1];
    if (h < 1 || w < 1 || h > PNG_MAX_SIDE || w > PNG_MAX_SIDE)
        return td_failc("png_save: %s: image %s: sides must be 1..%u", path, td_shape_str(img, s), PNG_MAX_SIDE);
    png_ctx c = {.path = path, .w = (uint32_t)w, .h = (uint32_t)h, .channels = (int)ch};
    float *vals = malloc(sizeof(float) * (size_t)img->numel);
    if (!vals || alloc_rows(&c, (size_t)(w * ch))) {
        free(vals);
        free(c.pixels);
        free(c.rows);
        return td_failc("png_save: %s: out of memory for %s", path, td_shape_str(img, s));
    }
    td_copy_to_buffer(img, vals);
    for (int64_t k = 0; k < ch; k++)
        for (int64_t i = 0; i < h * w; i++) c.pixels[i * ch + k] = to_byte(vals[k * h * w + i]);
    free(vals);
    td_atomic_file a;
    int rc = td_atomic_open(&a, path, "png_save");
    if (rc == 0) {
        c.fp = a.fp;
        rc = png_encode(&c);
        if (rc != 0) {
            td_failc("png_save: %s: %s", path, c.msg);
            td_atomic_abort(&a);
        }
    }
    png_destroy_write_struct(c.png ? &c.png : NULL, c.info ? &c.info : NULL);
    if (rc == 0) rc = td_atomic_commit(&a, "png_save");
    free(c.rows);
    free(c.pixels);
    return rc;
}

td_tensor *td_image_grid(const td_tensor *imgs, int ncol, int pad, float pad_value) {
    char s[TD_SHAPE_BUF];
    if (!imgs) return td_fail("image_grid: NULL tensor");
    if (imgs->ndim != 4) return td_fail("image_grid: images %s must be [N,C,H,W]", td_shape_str(imgs, s));
    if (ncol < 1 || pad < 0) return td_fail("image_grid: images %s: ncol %d must be >= 1 and pad %d >= 0", td_shape_str(imgs, s), ncol, pad);
    int64_t n = imgs->shape[0], c = imgs->shape[1], h = imgs->shape[2], w = imgs->shape[3];
    int64_t rows = (n + ncol - 1) / ncol;
    int64_t gh = rows * (h + pad) + pad, gw = ncol * (w + pad) + pad;
    td_tensor *out = td_full(3, (int64_t[]){c, gh, gw}, pad_value);
    float *vals = malloc(sizeof(float) * (size_t)(imgs->numel + 1));
    if (!out || !vals) {
        td_release(out);
        free(vals);
        return td_fail("image_grid: out of memory for a [%lld,%lld,%lld] grid", (long long)c, (long long)gh, (long long)gw);
    }
    td_copy_to_buffer(imgs, vals);
    for (int64_t i = 0; i < n; i++) {
        int64_t y0 = pad + (i / ncol) * (h + pad), x0 = pad + (i % ncol) * (w + pad);
        for (int64_t k = 0; k < c; k++)
            for (int64_t y = 0; y < h; y++)
                memcpy(out->data + (k * gh + y0 + y) * gw + x0, vals + ((i * c + k) * h + y) * w, sizeof(float) * (size_t)w);
    }
    free(vals);
    return out;
}
