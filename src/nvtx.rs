//! NVTX ranges for nsys and ncu: a small NVTX v3 client.
//!
//! CUDA 13 ships NVTX only as the header-only NVTX v3 (no libnvToolsExt.so, which cudarc's
//! `nvtx` module would dlopen), so this file re-implements what those headers compile into
//! every program (nvtx3/nvtxDetail/nvtxImpl.h, nvtxInit.h, nvtxTypes.h; the numbers below
//! are from NVTX 3 as shipped in the nvidia-nvtx 13.2 wheel):
//!
//! - on first use, if `$NVTX_INJECTION64_PATH` names a library (nsys and ncu set it), dlopen
//!   it and call its `InitializeInjectionNvtx2(nvtxGetExportTable)`;
//! - the tool asks `nvtxGetExportTable` for the CALLBACKS table and calls its
//!   `GetModuleFunctionTable(module, &table, &size)` for each module it handles; the table is
//!   an array of pointers to our function-pointer slots, and the tool writes its own
//!   functions into the slots it implements;
//! - every NVTX call then reads its slot and calls the tool's function, if any.
//!
//! Without a tool (or when loading fails) nothing is loaded and a range costs one atomic
//! load. Only `RangePushA`, `RangePop` and `MarkA` are called from Rust; the other slots
//! exist because tools expect a table for every module the reference serves.

use std::ffi::{c_char, c_int, c_uint, c_void};
use std::marker::PhantomData;
use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::OnceLock;

/// `NVTX_VERSION` (nvToolsExt.h), reported in the VERSIONINFO export table.
const NVTX_VERSION: u32 = 3;

/// `NvtxExportTableID` (nvtxTypes.h).
const ETID_CALLBACKS: u32 = 1;
const ETID_VERSIONINFO: u32 = 3;

/// `NvtxCallbackModule` (nvtxTypes.h): CORE 1, CUDA 2, OPENCL 3, CUDART 4, CORE2 5, SYNC 6.
/// `NVTX_CBID_<module>_SIZE`, one past each module's last callback id, from the same enums.
const CORE_SIZE: usize = 16;
const CUDA_SIZE: usize = 9;
const OPENCL_SIZE: usize = 15;
const CUDART_SIZE: usize = 7;
const CORE2_SIZE: usize = 16;
const SYNC_SIZE: usize = 7;

/// The CORE slots we call (`NVTX_CBID_CORE_MarkA`, `_RangePushA`, `_RangePop`).
const CBID_CORE_MARK_A: usize = 2;
const CBID_CORE_RANGE_PUSH_A: usize = 9;
const CBID_CORE_RANGE_POP: usize = 11;

/// A function-pointer slot the tool fills (null: not implemented by the tool).
type Slot = AtomicPtr<c_void>;

/// The slots of one module, indexed by callback id (0 is unused, as in the reference).
struct Slots<const N: usize>([Slot; N]);

static CORE: Slots<CORE_SIZE> = Slots::new();
static CUDA: Slots<CUDA_SIZE> = Slots::new();
static OPENCL: Slots<OPENCL_SIZE> = Slots::new();
static CUDART: Slots<CUDART_SIZE> = Slots::new();
static CORE2: Slots<CORE2_SIZE> = Slots::new();
static SYNC: Slots<SYNC_SIZE> = Slots::new();

impl<const N: usize> Slots<N> {
    const fn new() -> Self {
        Slots([const { AtomicPtr::new(ptr::null_mut()) }; N])
    }
}

/// Empties every slot (the reference's `nvtxSetInitFunctionsToNoops(1)` after a failed init).
#[cfg(unix)]
fn clear_slots() {
    let all: [&[Slot]; 6] = [&CORE.0, &CUDA.0, &OPENCL.0, &CUDART.0, &CORE2.0, &SYNC.0];
    for slot in all.into_iter().flatten() {
        slot.store(ptr::null_mut(), Ordering::Release);
    }
}

/// A module's table as the reference lays it out (`functionTable_CORE[NVTX_CBID_CORE_SIZE + 1]`
/// in nvtxImpl.h): entry 0 null, entry i the address of slot i, and one extra null at the end
/// "to ensure a crash instead of silent corruption if a tool reads off the end".
#[repr(transparent)]
struct Table<const M: usize>([*const Slot; M]);
// SAFETY: the table is immutable; it only holds addresses of atomics.
unsafe impl<const M: usize> Sync for Table<M> {}

impl<const M: usize> Table<M> {
    const fn of<const N: usize>(slots: &'static Slots<N>) -> Self {
        assert!(M == N + 1);
        let mut t = [ptr::null(); M];
        let mut i = 1;
        while i < N {
            t[i] = &slots.0[i];
            i += 1;
        }
        Table(t)
    }
}

static CORE_TABLE: Table<{ CORE_SIZE + 1 }> = Table::of(&CORE);
static CUDA_TABLE: Table<{ CUDA_SIZE + 1 }> = Table::of(&CUDA);
static OPENCL_TABLE: Table<{ OPENCL_SIZE + 1 }> = Table::of(&OPENCL);
static CUDART_TABLE: Table<{ CUDART_SIZE + 1 }> = Table::of(&CUDART);
static CORE2_TABLE: Table<{ CORE2_SIZE + 1 }> = Table::of(&CORE2);
static SYNC_TABLE: Table<{ SYNC_SIZE + 1 }> = Table::of(&SYNC);

/// `nvtxEtiGetModuleFunctionTable` (nvtxImpl.h): a table for each of the six modules, with
/// `*out_size` = entries - 1 = `NVTX_CBID_<module>_SIZE`; 0 for any other id. Either out
/// pointer may be null.
unsafe extern "C" fn get_module_function_table(
    module: c_int,
    out_table: *mut *const *const Slot,
    out_size: *mut c_uint,
) -> c_int {
    let (table, entries): (*const *const Slot, usize) = match module {
        1 => (CORE_TABLE.0.as_ptr(), CORE_TABLE.0.len()),
        2 => (CUDA_TABLE.0.as_ptr(), CUDA_TABLE.0.len()),
        3 => (OPENCL_TABLE.0.as_ptr(), OPENCL_TABLE.0.len()),
        4 => (CUDART_TABLE.0.as_ptr(), CUDART_TABLE.0.len()),
        5 => (CORE2_TABLE.0.as_ptr(), CORE2_TABLE.0.len()),
        6 => (SYNC_TABLE.0.as_ptr(), SYNC_TABLE.0.len()),
        _ => return 0,
    };
    if !out_size.is_null() {
        *out_size = (entries - 1) as c_uint;
    }
    if !out_table.is_null() {
        *out_table = table;
    }
    1
}

/// `NvtxExportTableCallbacks` (nvtxTypes.h).
#[repr(C)]
struct ExportTableCallbacks {
    struct_size: usize,
    get_module_function_table:
        unsafe extern "C" fn(c_int, *mut *const *const Slot, *mut c_uint) -> c_int,
}

/// `NvtxExportTableVersionInfo` (nvtxTypes.h).
#[repr(C)]
struct ExportTableVersionInfo {
    struct_size: usize,
    version: u32,
    reserved0: u32,
    set_injection_nvtx_version: extern "C" fn(u32),
}

static CALLBACKS: ExportTableCallbacks = ExportTableCallbacks {
    struct_size: std::mem::size_of::<ExportTableCallbacks>(),
    get_module_function_table,
};

static VERSION_INFO: ExportTableVersionInfo = ExportTableVersionInfo {
    struct_size: std::mem::size_of::<ExportTableVersionInfo>(),
    version: NVTX_VERSION,
    reserved0: 0,
    set_injection_nvtx_version,
};

/// Ignored, as in the reference (`nvtxEtiSetInjectionNvtxVersion`).
extern "C" fn set_injection_nvtx_version(_version: u32) {}

/// `nvtxGetExportTable` (nvtxImpl.h), handed to the tool's init function.
extern "C" fn get_export_table(id: u32) -> *const c_void {
    match id {
        ETID_CALLBACKS => &CALLBACKS as *const _ as *const c_void,
        ETID_VERSIONINFO => &VERSION_INFO as *const _ as *const c_void,
        _ => ptr::null(),
    }
}

#[cfg(unix)]
mod dl {
    use std::ffi::{c_char, c_int, c_void};
    // glibc >= 2.34 has these in libc; older ones in libdl, which std links on linux-gnu.
    extern "C" {
        pub fn dlopen(filename: *const c_char, flags: c_int) -> *mut c_void;
        pub fn dlsym(handle: *mut c_void, symbol: *const c_char) -> *mut c_void;
        pub fn dlclose(handle: *mut c_void) -> c_int;
        pub fn dlerror() -> *mut c_char;
    }
    /// 1 on Linux, the BSDs and macOS; what the reference passes (`NVTX_DLLOPEN`).
    pub const RTLD_LAZY: c_int = 1;
}

/// The tool's entry point, `NvtxInitializeInjectionNvtxFunc_t`.
type InitFn = unsafe extern "C" fn(extern "C" fn(u32) -> *const c_void) -> c_int;

/// The reference's load sequence (nvtxInit.h, NVTX_LOAD_SEQUENCE_VERSION 2) on Linux: only
/// the environment variable. Its "pre-injected" `dlsym(RTLD_DEFAULT,
/// "InitializeInjectionNvtx2Preinject")` step is compiled out there
/// (NVTX_SUPPORT_ALREADY_INJECTED_LIBRARY 0) and the static-injection weak symbol has no Rust
/// counterpart, so neither is tried. Err carries the reason, for SOFTPROMPT_NVTX_DEBUG.
#[cfg(unix)]
fn load() -> Result<String, String> {
    use std::ffi::{CStr, CString};
    use std::os::unix::ffi::OsStrExt;
    let var = if cfg!(target_pointer_width = "32") {
        "NVTX_INJECTION32_PATH"
    } else {
        "NVTX_INJECTION64_PATH"
    };
    let path = match std::env::var_os(var) {
        Some(p) if !p.is_empty() => p,
        _ => return Err(format!("{var} is not set; ranges are off")),
    };
    let shown = path.to_string_lossy().into_owned();
    let cpath = CString::new(path.as_bytes()).map_err(|_| format!("{var}: a NUL in the path"))?;
    let dlerr = || {
        // SAFETY: dlerror returns null or a NUL-terminated string valid until the next call.
        let e = unsafe { dl::dlerror() };
        if e.is_null() {
            String::new()
        } else {
            unsafe { CStr::from_ptr(e) }.to_string_lossy().into_owned()
        }
    };
    // SAFETY: plain libdl calls on valid C strings; the symbol, when found, has the type the
    // NVTX protocol gives it.
    unsafe {
        let handle = dl::dlopen(cpath.as_ptr(), dl::RTLD_LAZY);
        if handle.is_null() {
            return Err(format!("cannot load {shown}: {}", dlerr()));
        }
        let sym = dl::dlsym(handle, c"InitializeInjectionNvtx2".as_ptr());
        if sym.is_null() {
            dl::dlclose(handle);
            return Err(format!("{shown} has no InitializeInjectionNvtx2"));
        }
        let init: InitFn = std::mem::transmute::<*mut c_void, InitFn>(sym);
        if init(get_export_table) == 0 {
            // as the reference does: forget whatever the tool wrote, and unload it
            clear_slots();
            dl::dlclose(handle);
            return Err(format!("{shown}: InitializeInjectionNvtx2 returned 0"));
        }
        // the tool stays loaded for the life of the process
        Ok(format!("attached to {shown}"))
    }
}

#[cfg(not(unix))]
fn load() -> Result<String, String> {
    Err("NVTX injection is only supported on unix".into())
}

/// Whether a tool attached; the first call loads it (at most once, thread-safe).
pub fn enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| {
        let r = load();
        // a bad value is refused at start (env::check); here it counts as unset
        if crate::env::nvtx_debug().unwrap_or(false) {
            errln!("nvtx: {}", r.as_ref().unwrap_or_else(|e| e));
        }
        r.is_ok()
    })
}

/// The tool's function in a CORE slot, if it filled it.
fn core_slot(id: usize) -> Option<*mut c_void> {
    let f = CORE.0[id].load(Ordering::Acquire);
    (!f.is_null()).then_some(f)
}

/// `name` as a C string, cut at its first NUL.
fn c_name(name: &str) -> Vec<u8> {
    let mut v: Vec<u8> = name.bytes().take_while(|&b| b != 0).collect();
    v.push(0);
    v
}

/// A pushed range (`nvtxRangePushA`), popped on drop. Not `Send`: NVTX ranges are per thread.
pub struct Range {
    pushed: bool,
    _thread: PhantomData<*const ()>,
}

impl Range {
    pub fn push(name: &str) -> Range {
        let pushed = enabled();
        if pushed {
            if let Some(f) = core_slot(CBID_CORE_RANGE_PUSH_A) {
                let s = c_name(name);
                // SAFETY: `nvtxRangePushA_impl_fntype` is `int (const char*)`.
                unsafe {
                    let f: unsafe extern "C" fn(*const c_char) -> c_int = std::mem::transmute(f);
                    f(s.as_ptr().cast());
                }
            }
        }
        Range {
            pushed,
            _thread: PhantomData,
        }
    }
}

impl Drop for Range {
    fn drop(&mut self) {
        if self.pushed {
            if let Some(f) = core_slot(CBID_CORE_RANGE_POP) {
                // SAFETY: `nvtxRangePop_impl_fntype` is `int (void)`.
                unsafe {
                    let f: unsafe extern "C" fn() -> c_int = std::mem::transmute(f);
                    f();
                }
            }
        }
    }
}

/// An instantaneous marker (`nvtxMarkA`).
pub fn mark(name: &str) {
    if !enabled() {
        return;
    }
    if let Some(f) = core_slot(CBID_CORE_MARK_A) {
        let s = c_name(name);
        // SAFETY: `nvtxMarkA_impl_fntype` is `void (const char*)`.
        unsafe {
            let f: unsafe extern "C" fn(*const c_char) = std::mem::transmute(f);
            f(s.as_ptr().cast());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Table sizes per module id as the reference returns them: `NVTX_CBID_<module>_SIZE`
    /// from nvtxTypes.h (CORE 16, CUDA 9, OPENCL 15, CUDART 7, CORE2 16, SYNC 7), and failure
    /// for INVALID (0), NVTX_CB_MODULE_SIZE (7) and anything else.
    #[test]
    fn module_tables_match_the_headers() {
        let want = [(1, 16), (2, 9), (3, 15), (4, 7), (5, 16), (6, 7)];
        let mut all = Vec::new();
        for (module, size) in want {
            let mut table: *const *const Slot = ptr::null();
            let mut n: c_uint = 0;
            assert_eq!(
                unsafe { get_module_function_table(module, &mut table, &mut n) },
                1
            );
            assert_eq!(n, size, "module {module}");
            let t = unsafe { std::slice::from_raw_parts(table, size as usize + 1) };
            assert!(
                t[0].is_null() && t[size as usize].is_null(),
                "module {module}"
            );
            assert!(t[1..size as usize].iter().all(|p| !p.is_null()));
            all.extend_from_slice(&t[1..size as usize]);
            // null out pointers are allowed
            assert_eq!(
                unsafe { get_module_function_table(module, ptr::null_mut(), ptr::null_mut()) },
                1
            );
        }
        let n = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), n, "every slot is distinct");
        for bad in [0, 7, 8, -1, 0x7fff_ffff] {
            let mut n: c_uint = 99;
            assert_eq!(
                unsafe { get_module_function_table(bad, ptr::null_mut(), &mut n) },
                0
            );
            assert_eq!(n, 99);
        }
    }

    /// The export tables' ids and layouts (nvtxTypes.h): CALLBACKS {size_t, fn} = 16 bytes,
    /// VERSIONINFO {size_t, uint32, uint32, fn} = 24 bytes on 64-bit, version 3.
    #[test]
    fn export_tables() {
        assert!(get_export_table(0).is_null());
        assert!(get_export_table(2).is_null()); // NVTX_ETID_RESERVED0
        assert!(get_export_table(4).is_null());
        let cb = unsafe { &*(get_export_table(1) as *const ExportTableCallbacks) };
        let vi = unsafe { &*(get_export_table(3) as *const ExportTableVersionInfo) };
        if cfg!(target_pointer_width = "64") {
            assert_eq!(cb.struct_size, 16);
            assert_eq!(vi.struct_size, 24);
            assert_eq!(std::mem::offset_of!(ExportTableVersionInfo, reserved0), 12);
        }
        assert_eq!(vi.version, 3);
        (vi.set_injection_nvtx_version)(3);
    }
}
