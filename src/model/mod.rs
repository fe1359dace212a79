//! Models shared by a tool family, built from one tshark pass and cached per file and
//! display filter (`Analysis::model`), so tools of one family share that pass.

use std::future::Future;
use std::pin::Pin;

use crate::engine::Analysis;

pub mod tcp;
pub mod tls;

pub type BuildFuture<'a, M> = Pin<Box<dyn Future<Output = Result<M, String>> + Send + 'a>>;

pub trait Model: Sized + Send + Sync + 'static {
    /// Distinguishes families in the cache.
    const FAMILY: &'static str;
    fn build(a: &mut Analysis) -> BuildFuture<'_, Self>;
    /// The tshark command lines the build ran.
    fn commands(&self) -> &[String];
    fn warning(&self) -> Option<&String>;
    /// An estimate of the memory it holds, for the cache's byte budget.
    fn approx_bytes(&self) -> usize;
}

macro_rules! impl_model {
    ($t:ty, $family:literal) => {
        impl $crate::model::Model for $t {
            const FAMILY: &'static str = $family;
            fn build(a: &mut $crate::engine::Analysis) -> $crate::model::BuildFuture<'_, Self> {
                Box::pin(<$t>::build(a))
            }
            fn commands(&self) -> &[String] {
                &self.commands
            }
            fn warning(&self) -> Option<&String> {
                self.warning.as_ref()
            }
            fn approx_bytes(&self) -> usize {
                <$t>::approx_bytes(self)
            }
        }
    };
}

impl_model!(tcp::TcpModel, "tcp");
impl_model!(tls::TlsModel, "tls");
