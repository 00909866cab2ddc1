//! Sensors for Weir: deterministic simulators today, drivers generic over
//! `embedded-hal` traits later.
//!
//! The core is `no_std` (the `std` feature, on by default, only adds
//! conveniences for Linux backends), so that simulators and drivers can be
//! exercised on any target, including bare-metal test rigs.
#![cfg_attr(not(any(feature = "std", test)), no_std)]

pub mod sim;
