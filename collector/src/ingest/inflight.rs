//! Memory of pushes in flight: the bytes of each push, from its first byte until it is answered,
//! count against a budget, so what hosts send at once cannot outgrow the collector's memory.
//!
//! The writer's budget ([`super::WriterConfig::max_pending_bytes`]) covers batches waiting to be
//! written; this covers the step before, while a push is received, decoded, validated and
//! re-encoded for the dead-letter directory (each a copy of about its size). Each push reserves
//! [`COPIES`] times its message's length, read from the gRPC frame header — all of it at once, so
//! pushes arriving together cannot each hold part and starve the others — or is answered
//! `RESOURCE_EXHAUSTED` at once (hosts keep the batch and retry); a message whose copies exceed
//! the whole budget is `INVALID_ARGUMENT` (it could never be taken). Because the copies are
//! charged, the budget bounds the memory itself, not the bytes on the wire.

use std::{
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
};

use http_body::{Frame, SizeHint};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::{
    Status,
    body::Body,
    codegen::{Bytes, http},
};

/// The budget's unit: permits count KiB, so any budget fits in a semaphore.
const UNIT: usize = 1024;

/// A gRPC message starts with a 1-byte compression flag and a 4-byte big-endian length.
const HEADER: usize = 5;

/// Copies of a message a push holds at its peak: the received bytes, the decoded batch, the
/// validated batch and the re-encoded wire batch kept for the dead-letter directory.
pub const COPIES: usize = 4;

/// A tower layer charging each request's gRPC message against a shared byte budget.
#[derive(Debug, Clone)]
pub struct InflightLayer {
    budget: Arc<Semaphore>,
    bytes: usize,
}

impl InflightLayer {
    /// A budget of `bytes` for the messages of requests in flight (at least one KiB).
    pub fn new(bytes: usize) -> Self {
        let permits = (bytes / UNIT).clamp(1, Semaphore::MAX_PERMITS);
        Self {
            budget: Arc::new(Semaphore::new(permits)),
            bytes: permits * UNIT,
        }
    }

    /// Bytes currently reserved by requests in flight.
    pub fn reserved(&self) -> usize {
        self.bytes - self.budget.available_permits() * UNIT
    }

    /// The largest message this budget can ever take (its [`COPIES`] must fit).
    pub fn largest_message(&self) -> usize {
        (self.bytes / COPIES).saturating_sub(HEADER)
    }
}

impl<S> tower::Layer<S> for InflightLayer {
    type Service = Inflight<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Inflight {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`InflightLayer`] makes: holds a request's reservation until it is answered.
#[derive(Debug, Clone)]
pub struct Inflight<S> {
    inner: S,
    layer: InflightLayer,
}

impl<S> tower::Service<http::Request<Body>> for Inflight<S>
where
    S: tower::Service<http::Request<Body>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let held = Arc::new(Mutex::new(Vec::new()));
        let (parts, body) = request.into_parts();
        let body = Body::new(Counted {
            inner: body,
            layer: self.layer.clone(),
            header: Vec::with_capacity(HEADER),
            held: Arc::clone(&held),
        });
        let answer = self.inner.call(http::Request::from_parts(parts, body));
        Box::pin(async move {
            let answer = answer.await;
            // Answered: the push's copies are gone (or handed to the writer, which counts them).
            drop(held);
            answer
        })
    }
}

/// A request body that reserves its gRPC message's length once the header has arrived.
struct Counted {
    inner: Body,
    layer: InflightLayer,
    /// The header's bytes seen so far (until it is complete).
    header: Vec<u8>,
    /// The reservation, released when the request is answered.
    held: Arc<Mutex<Vec<OwnedSemaphorePermit>>>,
}

impl Counted {
    /// Reads the header from `data`; once complete, reserves the message's length.
    fn reserve(&mut self, data: &[u8]) -> Result<(), Status> {
        if self.header.len() >= HEADER {
            return Ok(());
        }
        let take = (HEADER - self.header.len()).min(data.len());
        self.header.extend_from_slice(&data[..take]);
        if self.header.len() < HEADER {
            return Ok(());
        }
        let len = u32::from_be_bytes([
            self.header[1],
            self.header[2],
            self.header[3],
            self.header[4],
        ]) as usize;
        let need = ((len + HEADER) * COPIES).div_ceil(UNIT);
        if need * UNIT > self.layer.bytes {
            return Err(Status::invalid_argument(format!(
                "the batch is {len} bytes; receiving and decoding it takes about {COPIES} times \
                 that, more than this collector's budget for pushes in flight ({} bytes, half of \
                 --memory-budget): send batches under {} bytes, or raise --memory-budget",
                self.layer.bytes,
                self.layer.largest_message()
            )));
        }
        let permits = u32::try_from(need).unwrap_or(u32::MAX);
        match Arc::clone(&self.layer.budget).try_acquire_many_owned(permits) {
            Ok(permit) => {
                self.held
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(permit);
                Ok(())
            }
            Err(_) => Err(Status::resource_exhausted(format!(
                "the collector is receiving {} bytes of other pushes, its budget for pushes in \
                 flight ({} bytes); retry later",
                self.layer.reserved(),
                self.layer.bytes
            ))),
        }
    }
}

impl http_body::Body for Counted {
    type Data = Bytes;
    type Error = tonic::codegen::StdError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref()
                    && let Err(status) = this.reserve(data)
                {
                    return Poll::Ready(Some(Err(Box::new(status))));
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(len: u32) -> Vec<u8> {
        let mut h = vec![0];
        h.extend_from_slice(&len.to_be_bytes());
        h
    }

    fn counted(layer: &InflightLayer) -> Counted {
        Counted {
            inner: Body::empty(),
            layer: layer.clone(),
            header: Vec::new(),
            held: Arc::default(),
        }
    }

    /// A message reserves its whole length once its header is complete, even split across
    /// frames; the reservation ends with the request, and a second push that does not fit is
    /// refused RESOURCE_EXHAUSTED while the first holds the budget.
    #[test]
    fn reserves_whole_messages_and_refuses_what_does_not_fit() {
        let layer = InflightLayer::new(400 * UNIT);
        let mut first = counted(&layer);
        let h = header(60 * 1024);
        first.reserve(&h[..2]).unwrap();
        assert_eq!(layer.reserved(), 0, "header incomplete");
        first.reserve(&h[2..]).unwrap();
        assert_eq!(
            layer.reserved(),
            241 * UNIT,
            "{COPIES} copies of 60 KiB + header"
        );
        first.reserve(&[1; 4096]).unwrap();
        assert_eq!(
            layer.reserved(),
            241 * UNIT,
            "body bytes are not charged twice"
        );
        let mut second = counted(&layer);
        let e = second.reserve(&header(50 * 1024)).unwrap_err();
        assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e:?}");
        drop(first);
        assert_eq!(layer.reserved(), 0);
        let mut third = counted(&layer);
        third.reserve(&header(50 * 1024)).unwrap();
        assert!(layer.largest_message() < 100 * 1024);
        let e = counted(&layer).reserve(&header(101 * 1024)).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
        assert!(e.message().contains("--memory-budget"), "{}", e.message());
    }
}
