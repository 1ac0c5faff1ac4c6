//! The embedders' calibration priors: what a head with one image per class
//! (where leave-one-out has nothing to compare) takes its temperature and
//! unknown entry from. Plain data, so a build in the browser calibrates as
//! the command line does.

use crate::meta::{HeadOptions, Prior};

/// Calibration priors per embedder, for indexes with one image per class
/// (where leave-one-out has nothing to compare): (embedder, softmax
/// temperature of cosine class similarities, novelty offset, novelty scale).
/// Fitted by `bench/fit_priors.py` on Tiny ImageNet validation photos (200
/// classes; never the CUB birds cbr's accuracy figures are measured on):
/// many 1-image-per-class draws of 10 to 50 classes, τ minimising the
/// negative log-likelihood of the other photos, the offset answering
/// `meta::DEFAULT_KNOWN_TARGET` of them at the default options.
///
/// `python3 bench/fit_priors.py DUMP --classes 100` on the first 100 classes
/// (60 draws, 78,400 queries) gave, for efficientnet-lite0: τ 0.0670, offset
/// 0.5094, scale 45.56 (top-1 of those draws 48.1%). No prior is fitted yet
/// for efficientnet-lite1 and -lite2: they get [`Prior::generic`].
pub const PRIORS: &[(&str, f32, f32, f32)] = &[("efficientnet-lite0", 0.0670, 0.5094, 45.56)];

/// The calibration prior for the embedder called `name`, or the generic
/// default ([`Prior::generic`]) for one cbr has none for.
/// An int8 model takes its float twin's prior (its embeddings are within ~1% of them).
pub fn prior(name: &str) -> Prior {
    let name = name.strip_suffix("-int8").unwrap_or(name);
    match PRIORS.iter().find(|p| p.0 == name) {
        Some(&(embedder, temperature, novelty_offset, novelty_scale)) => Prior {
            source: format!("{embedder}, fitted on Tiny ImageNet (bench/fit_priors.py)"),
            temperature,
            novelty_offset,
            novelty_scale,
        },
        None => Prior::generic(),
    }
}

/// `opts` for a head on the embedder called `name`: its prior in place of
/// the generic one (an explicit prior, as an edited model keeps, stays).
pub fn head_options_for(opts: &HeadOptions, name: &str) -> HeadOptions {
    let mut o = opts.clone();
    if o.prior.as_ref().is_some_and(|p| *p == Prior::generic()) {
        o.prior = Some(prior(name));
    }
    o
}
