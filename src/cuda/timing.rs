//! Per-kernel timing for `softprompt profile`: every launch and GEMM of a profiled region is
//! bracketed by CUDA events on the GPU (device time, no synchronisation between launches) or
//! by the host clock under `emu` (whose launches are synchronous). The totals are read once,
//! at the end of the region.

use crate::backend::KernelTime;
use crate::error::{Error, Result};
use cudarc::driver::{result, sys};
use std::collections::BTreeMap;
use std::time::Instant;

pub enum Stamp {
    Event(sys::CUevent),
    Host(Instant),
}

pub struct Span {
    pub name: String,
    pub start: Stamp,
    pub end: Stamp,
}

// SAFETY: CUevent handles are plain driver handles, used under the device's lock only.
unsafe impl Send for Span {}

/// A stamp on the default stream (the one every launch goes to).
pub fn event_stamp() -> Result<Stamp> {
    let ev = result::event::create(sys::CUevent_flags::CU_EVENT_DEFAULT)
        .map_err(|e| Error::Device(format!("cuEventCreate: {e:?}")))?;
    // SAFETY: a live event recorded on the legacy default stream.
    unsafe { result::event::record(ev, std::ptr::null_mut()) }
        .map_err(|e| Error::Device(format!("cuEventRecord: {e:?}")))?;
    Ok(Stamp::Event(ev))
}

fn destroy(s: &Stamp) {
    if let Stamp::Event(ev) = s {
        // SAFETY: created by event_stamp, destroyed once, after the device synchronised.
        unsafe {
            let _ = result::event::destroy(*ev);
        }
    }
}

fn elapsed_ms(start: &Stamp, end: &Stamp) -> Result<f64> {
    match (start, end) {
        (Stamp::Host(a), Stamp::Host(b)) => Ok(b.duration_since(*a).as_secs_f64() * 1e3),
        // SAFETY: both events were recorded and the device has synchronised.
        (Stamp::Event(a), Stamp::Event(b)) => unsafe { result::event::elapsed(*a, *b) }
            .map(f64::from)
            .map_err(|e| Error::Device(format!("cuEventElapsedTime: {e:?}"))),
        _ => Err(Error::Device(
            "profile: mixed host and device stamps".into(),
        )),
    }
}

/// Sums the spans by name (largest total first) and frees their events. The caller has
/// synchronised the device.
pub fn summarize(spans: Vec<Span>) -> Result<Vec<KernelTime>> {
    let mut by_name: BTreeMap<String, KernelTime> = BTreeMap::new();
    let mut failure = None;
    for s in &spans {
        match elapsed_ms(&s.start, &s.end) {
            Ok(ms) => {
                let k = by_name.entry(s.name.clone()).or_insert_with(|| KernelTime {
                    name: s.name.clone(),
                    calls: 0,
                    ms: 0.0,
                });
                k.calls += 1;
                k.ms += ms;
            }
            Err(e) => failure = Some(e),
        }
    }
    for s in &spans {
        destroy(&s.start);
        destroy(&s.end);
    }
    if let Some(e) = failure {
        return Err(e);
    }
    let mut rows: Vec<KernelTime> = by_name.into_values().collect();
    rows.sort_by(|a, b| b.ms.total_cmp(&a.ms));
    Ok(rows)
}
