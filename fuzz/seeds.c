/* Writes the seed corpus of the fuzz targets (fuzz/corpus/<target>/) from the same writers
 * the checkpoint suite uses: good files of each shape plus a few broken ones. Run by
 * `sh fuzz/run.sh --seeds`. Usage: seeds DIR (DIR/safetensors, DIR/torchzip, DIR/pickle
 * must exist). */
#include "tests/ckpt_write.h"

static const char *root;

static void save(const char *sub, const char *name, const wbuf *b)
{
    char p[1024];
    snprintf(p, sizeof p, "%s/%s/%s", root, sub, name);
    if (wb_save(b, p)) {
        fprintf(stderr, "seeds: cannot write %s\n", p);
        exit(1);
    }
}

static void st_raw(const char *name, const char *header, size_t data_len)
{
    static const unsigned char zeros[64];
    wbuf b = { 0 };
    st_write(&b, header, 1, zeros, data_len);
    save("safetensors", name, &b);
    wb_free(&b);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: seeds DIR\n");
        return 2;
    }
    root = argv[1];
    wbuf b = { 0 };
    /* safetensors */
    sample_safetensors(&b, 8);
    save("safetensors", "sample.safetensors", &b);
    b.n = 0;
    sample_safetensors(&b, 1);
    save("safetensors", "sample-unaligned.safetensors", &b);
    b.n = 0;
    st_write(&b, "{}", 8, NULL, 0);
    save("safetensors", "empty.safetensors", &b);
    st_raw("null-meta.safetensors", "{\"__metadata__\":null,\"x\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[0,8]}}", 8);
    st_raw("overlap.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                                  "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8);
    st_raw("gap.safetensors", "{\"a\":{\"dtype\":\"BF16\",\"shape\":[2,1],\"data_offsets\":[4,8]}}", 8);
    st_raw("big-shape.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,4]}}", 4);
    /* raw pickles */
    pkw w;
    pk_start(&w, 2, true);
    pk_state_dict(&w);
    pk_stop(&w);
    save("pickle", "state_dict-p2.pkl", &w.b);
    wb_free(&w.b);
    pk_start(&w, 4, true);
    pk_state_dict(&w);
    pk_stop(&w);
    save("pickle", "state_dict-p4.pkl", &w.b);
    wb_free(&w.b);
    pk_start(&w, 2, true);
    pk_lightning(&w);
    pk_stop(&w);
    save("pickle", "lightning-p2.pkl", &w.b);
    /* torch zips */
    b.n = 0;
    if (torch_build(&b, "archive", &w.b, sample()->storages, 4, false, true))
        return 1;
    save("torchzip", "lightning.ckpt", &b);
    wb_free(&w.b);
    b.n = 0;
    if (torch_sample_build(&b, 2, true, "archive", false, true))
        return 1;
    save("torchzip", "state_dict-stored.pt", &b);
    b.n = 0;
    if (torch_sample_build(&b, 4, true, "model", true, false))
        return 1;
    save("torchzip", "state_dict-deflated.pt", &b);
    wb_free(&b);
    return 0;
}
