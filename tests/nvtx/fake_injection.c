/* A fake NVTX injection library (what nsys or ncu load through NVTX_INJECTION64_PATH), for
 * tests/nvtx.rs. It attaches the way a real tool does: InitializeInjectionNvtx2 gets the
 * CALLBACKS and VERSIONINFO export tables, asks for every module's function table, and writes
 * its own functions into the CORE slots RangePushA, RangePop and MarkA. Each call appends a
 * line to the file named by $FAKE_NVTX_LOG: "push NAME", "pop", "mark NAME"; init appends
 * "init tables C U O R C2 S" (each module's table size) or "error ..." lines when the client
 * breaks the protocol. With FAKE_NVTX_FAIL=1 init returns 0 after filling its slots, as a
 * tool that declines does.
 *
 * The types and ids are transcribed from nvtx3/nvtxDetail/nvtxTypes.h. When the test finds
 * the real headers it builds with -DFAKE_NVTX_HEADERS and the static asserts below check the
 * transcription against them. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef FAKE_NVTX_HEADERS
#include <nvtx3/nvToolsExt.h>
#endif

typedef void (*fake_fn)(void);
typedef const void *(*fake_get_export_table)(uint32_t id);
typedef struct {
    size_t struct_size;
    int (*GetModuleFunctionTable)(int module, fake_fn ***out_table, unsigned int *out_size);
} fake_callbacks;
typedef struct {
    size_t struct_size;
    uint32_t version;
    uint32_t reserved0;
    void (*SetInjectionNvtxVersion)(uint32_t version);
} fake_version_info;

enum { ETID_CALLBACKS = 1, ETID_VERSIONINFO = 3 };
enum { CBID_CORE_MarkA = 2, CBID_CORE_RangePushA = 9, CBID_CORE_RangePop = 11 };
/* NVTX_CBID_<module>_SIZE for modules 1..6: CORE, CUDA, OPENCL, CUDART, CORE2, SYNC */
static const unsigned int want_size[7] = {0, 16, 9, 15, 7, 16, 7};

#ifdef FAKE_NVTX_HEADERS
_Static_assert(sizeof(fake_callbacks) == sizeof(NvtxExportTableCallbacks), "callbacks");
_Static_assert(sizeof(fake_version_info) == sizeof(NvtxExportTableVersionInfo), "versioninfo");
_Static_assert(offsetof(fake_version_info, SetInjectionNvtxVersion) ==
               offsetof(NvtxExportTableVersionInfo, SetInjectionNvtxVersion), "versioninfo");
_Static_assert((int)ETID_CALLBACKS == (int)NVTX_ETID_CALLBACKS, "etid");
_Static_assert((int)ETID_VERSIONINFO == (int)NVTX_ETID_VERSIONINFO, "etid");
_Static_assert((int)CBID_CORE_MarkA == (int)NVTX_CBID_CORE_MarkA, "cbid");
_Static_assert((int)CBID_CORE_RangePushA == (int)NVTX_CBID_CORE_RangePushA, "cbid");
_Static_assert((int)CBID_CORE_RangePop == (int)NVTX_CBID_CORE_RangePop, "cbid");
_Static_assert(NVTX_CB_MODULE_CORE == 1 && NVTX_CB_MODULE_SYNC == 6 && NVTX_CB_MODULE_SIZE == 7,
               "modules");
_Static_assert(NVTX_CBID_CORE_SIZE == 16 && NVTX_CBID_CUDA_SIZE == 9 &&
               NVTX_CBID_OPENCL_SIZE == 15 && NVTX_CBID_CUDART_SIZE == 7 &&
               NVTX_CBID_CORE2_SIZE == 16 && NVTX_CBID_SYNC_SIZE == 7, "sizes");
_Static_assert(NVTX_VERSION == 3, "version");
#endif

static void logf_(const char *fmt, const char *arg) {
    const char *path = getenv("FAKE_NVTX_LOG");
    FILE *f = path ? fopen(path, "a") : NULL;
    if (!f) return;
    fprintf(f, fmt, arg);
    fclose(f);
}

static int fake_push(const char *name) { logf_("push %s\n", name); return 0; }
static int fake_pop(void) { logf_("pop\n", ""); return 0; }
static void fake_mark(const char *name) { logf_("mark %s\n", name); }

int InitializeInjectionNvtx2(fake_get_export_table get) {
    char line[160];
    int ok = 1;
    const fake_callbacks *cb = get(ETID_CALLBACKS);
    const fake_version_info *vi = get(ETID_VERSIONINFO);
    if (!cb || cb->struct_size != sizeof(fake_callbacks) || !cb->GetModuleFunctionTable) {
        logf_("error: CALLBACKS table%s\n", "");
        return 0;
    }
    if (!vi || vi->struct_size != sizeof(fake_version_info) || vi->version != 3 ||
        !vi->SetInjectionNvtxVersion) {
        logf_("error: VERSIONINFO table%s\n", "");
        ok = 0;
    } else {
        vi->SetInjectionNvtxVersion(3);
    }
    if (get(0) || get(2) || get(4)) { logf_("error: table for a bad id%s\n", ""); ok = 0; }

    /* every module: a table of want_size[m] + 1 entries, null first and last */
    fake_fn **tables[7] = {0};
    unsigned int sizes[7] = {0};
    for (int m = 1; m <= 6; m++) {
        if (!cb->GetModuleFunctionTable(m, &tables[m], &sizes[m]) || !tables[m]) {
            snprintf(line, sizeof line, "error: no table for module %d", m);
            logf_("%s\n", line); ok = 0; continue;
        }
        if (sizes[m] != want_size[m] || tables[m][0] || tables[m][sizes[m]]) {
            snprintf(line, sizeof line, "error: module %d table size %u", m, sizes[m]);
            logf_("%s\n", line); ok = 0;
        }
        for (unsigned int i = 1; i < sizes[m]; i++)
            if (!tables[m][i]) {
                snprintf(line, sizeof line, "error: module %d slot %u is null", m, i);
                logf_("%s\n", line); ok = 0;
            }
    }
    fake_fn **t = NULL;
    unsigned int n = 0;
    if (cb->GetModuleFunctionTable(0, &t, &n) || cb->GetModuleFunctionTable(7, &t, &n)) {
        logf_("error: a table for module 0 or 7%s\n", ""); ok = 0;
    }
    snprintf(line, sizeof line, "init tables %u %u %u %u %u %u", sizes[1], sizes[2], sizes[3],
             sizes[4], sizes[5], sizes[6]);
    logf_("%s\n", line);

    if (!ok) return 0;
    fake_fn **core = tables[1];
    *core[CBID_CORE_RangePushA] = (fake_fn)fake_push;
    *core[CBID_CORE_RangePop] = (fake_fn)fake_pop;
    *core[CBID_CORE_MarkA] = (fake_fn)fake_mark;
    /* a tool that declines after writing its slots: the client must drop them */
    const char *fail = getenv("FAKE_NVTX_FAIL");
    return !(fail && strcmp(fail, "1") == 0);
}
