//! The scoring measured on synthetic past leads with a known true chance.

mod quality;
