//! Activation stem: GELU (erf and tanh), ReLU, SiLU, and T5's gated variants. Reference
//! src/cpu/activation.rs (which also holds `Act::value` and `Act::grad`, the scalar math),
//! kernels kernels/activation.cu, launchers src/cuda/activation.rs.

use crate::error::Result;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Act {
    /// exact GELU, x * Phi(x) (`gelu` in transformers, and `gelu_python`, its formula
    /// written out)
    GeluErf,
    /// tanh approximation (`gelu_new`, `gelu_pytorch_tanh`, `gelu_python_tanh`)
    GeluTanh,
    Relu,
    /// x * sigmoid(x) (`silu`, `swish`)
    Silu,
}

impl Act {
    /// Maps a transformers `hidden_act` / T5 `dense_act_fn` name.
    pub fn from_hf_name(name: &str) -> Option<Act> {
        match name {
            // the same functions written out in Python (verification 29, F1)
            "gelu" | "gelu_python" => Some(Act::GeluErf),
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_python_tanh" => Some(Act::GeluTanh),
            "relu" => Some(Act::Relu),
            "silu" | "swish" => Some(Act::Silu),
            _ => None,
        }
    }

    pub const SUPPORTED: &'static str =
        "gelu, gelu_python, gelu_new, gelu_pytorch_tanh, gelu_python_tanh, relu, silu, swish";

    /// The id the kernels switch on (kernels/activation.cu).
    pub fn id(self) -> i32 {
        match self {
            Act::GeluErf => 0,
            Act::GeluTanh => 1,
            Act::Relu => 2,
            Act::Silu => 3,
        }
    }
}

op_family! {
    /// Elementwise activations over N values.
    pub trait ActivationOps {
        /// out (N) = act(inp).
        fn act_fwd(&self, out: &mut Self::Buf, inp: &Self::Buf, act: Act, n: usize) -> Result<()>;
        /// dinp (N) += dout * act'(inp) with `accumulate`, else dinp = it, written whole (bit
        /// for bit what adding into zeros gives).
        fn act_bwd(
            &self,
            dinp: &mut Self::Buf,
            dout: &Self::Buf,
            inp: &Self::Buf,
            act: Act,
            n: usize,
            accumulate: bool,
        ) -> Result<()>;
        /// out (N) = act(gate) * lin (T5 v1.1's gated FFN).
        fn gated_act_fwd(
            &self,
            out: &mut Self::Buf,
            gate: &Self::Buf,
            lin: &Self::Buf,
            act: Act,
            n: usize,
        ) -> Result<()>;
        /// dgate (N) += dout * act'(gate) * lin; dlin (N) += dout * act(gate); with
        /// `accumulate` false both are written whole instead (as adding into zeros).
        fn gated_act_bwd(
            &self,
            dgate: &mut Self::Buf,
            dlin: &mut Self::Buf,
            dout: &Self::Buf,
            gate: &Self::Buf,
            lin: &Self::Buf,
            act: Act,
            n: usize,
            accumulate: bool,
        ) -> Result<()>;
    }
}
