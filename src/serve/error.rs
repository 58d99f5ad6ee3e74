//! What a failed request gets: an HTTP status and a message, answered as `{"error": "..."}`.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

/// A request's failure: its status and the message the client reads.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub msg: String,
    /// the engine could not hold the batch (host or device memory): a smaller one may run
    pub by_size: bool,
}

impl ApiError {
    pub fn new(status: StatusCode, msg: impl Into<String>) -> ApiError {
        ApiError {
            status,
            msg: msg.into(),
            by_size: false,
        }
    }

    pub fn bad_request(msg: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, msg)
    }

    pub fn not_found(msg: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, msg)
    }

    pub fn internal(msg: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, msg)
    }

    pub fn unavailable(msg: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, msg)
    }

    /// The engine's error on a request's texts: what the client handed in (a text that does
    /// not fit) is a 400; the rest is the server's, a 500: the engine checks a request's rows
    /// against the model before it runs them, so a size that does not add up inside it is a
    /// bug, and numbers that stop being finite come from the model or a loaded prompt, which
    /// the client cannot change.
    pub fn from_predict(e: &softprompt::Error) -> ApiError {
        let status = match fault(e) {
            Fault::Input => StatusCode::BAD_REQUEST,
            Fault::Check | Fault::Server => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let msg = e.to_string();
        // the device's allocator (CUDA_ERROR_OUT_OF_MEMORY, "out of memory")
        let lower = msg.to_ascii_lowercase();
        let by_size = matches!(e, softprompt::Error::Device(_))
            && (lower.contains("out of memory") || lower.contains("out_of_memory"));
        ApiError {
            by_size,
            ..ApiError::new(status, msg)
        }
    }

    /// The engine's error on a prompt folder a client asked to load: one that does not fit
    /// the model (its sizes, or its values) is the folder's, a 400; the device and the
    /// engine's own failures stay a 500.
    pub fn from_load(e: &softprompt::Error) -> ApiError {
        // a folder a run or a save is writing now: load it again once that ends (review 23)
        let busy = softprompt::FolderState::InUse;
        if matches!(e, softprompt::Error::Folder { state, .. } if *state == busy) {
            return ApiError::new(StatusCode::CONFLICT, e.to_string());
        }
        // a folder whose tensors are larger than the server's memory cannot load on it: the
        // folder's, not a failure of the server (verification 33, N2)
        let folder = matches!(e, softprompt::Error::HostMemory { .. });
        let status = match fault(e) {
            _ if folder => StatusCode::BAD_REQUEST,
            Fault::Input | Fault::Check => StatusCode::BAD_REQUEST,
            Fault::Server => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, e.to_string())
    }
}

/// Whose fault an engine error is.
enum Fault {
    /// what the client handed in: files, settings, texts
    Input,
    /// a size or value check: the input's on a prompt folder being loaded, the engine's on
    /// rows it checked itself
    Check,
    /// the server's own: its device, the engine
    Server,
}

/// Every variant is named, so that a new one is decided here.
fn fault(e: &softprompt::Error) -> Fault {
    use softprompt::Error as E;
    match e {
        E::Arg { .. }
        | E::Data { .. }
        | E::File { .. }
        | E::Folder { .. }
        | E::Io { .. }
        | E::Config { .. }
        | E::Tensor { .. }
        | E::Tokenizer { .. }
        | E::StepMemory { .. }
        | E::Unsupported(_) => Fault::Input,
        E::Shape { .. } | E::NonFinite(_) | E::Overflow { .. } => Fault::Check,
        E::Device(_) | E::Kernel { .. } | E::Interrupted(_) | E::HostMemory { .. } => Fault::Server,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        json_response(self.status, &json!({ "error": self.msg }))
    }
}

/// `body` as an `application/json` response.
pub fn json_response(status: StatusCode, body: &Value) -> Response {
    let headers = [(header::CONTENT_TYPE, "application/json")];
    (status, headers, body.to_string()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use softprompt::Error;

    /// A size or value check is the folder's fault when a client loads it (a 500 said the
    /// server failed), and the engine's on a request's rows, which it checked itself; the
    /// device's failures are the server's either way, and a bad text is the client's.
    #[test]
    fn each_error_has_its_status_on_a_load_and_on_a_prediction() {
        let shape = Error::shape("prompt (P*d)", 144, 141);
        let non_finite = Error::NonFinite("the prompt holds inf".into());
        let overflow = Error::Overflow {
            prompt: "huge/adapter_model.safetensors".into(),
            job: 1,
            row: 0,
            msg: "scored its labels {a: NaN}".into(),
        };
        let device = Error::Device("out of memory".into());
        let text = Error::data("the request", 2, "the text holds the mask token");
        let memory = Error::HostMemory {
            path: "huge/adapter_model.safetensors".into(),
            msg: "its tensors take about 4000.0 GB".into(),
        };
        let cases = [
            (&memory, 400, 500),
            (&shape, 400, 500),
            (&non_finite, 400, 500),
            (&overflow, 400, 500),
            (&device, 500, 500),
            (&text, 400, 400),
        ];
        for (e, load, predict) in cases {
            let (l, p) = (ApiError::from_load(e), ApiError::from_predict(e));
            assert_eq!(
                (l.status.as_u16(), p.status.as_u16()),
                (load, predict),
                "{e}"
            );
            assert_eq!(l.msg, e.to_string());
        }
    }
}
