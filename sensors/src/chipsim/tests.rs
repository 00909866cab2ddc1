use embedded_hal::i2c::I2c;

use super::*;
use crate::ads1115::{Ads1115, Gain};
use crate::bme280::Bme280;
use crate::error::Fault;
use crate::scan::{self, Chip};
use crate::sht3x::Sht3x;
use crate::sim::{Anomaly, AnomalyKind, SimSensor, SimSpec};

struct NoDelay;
impl embedded_hal::delay::DelayNs for NoDelay {
    fn delay_ns(&mut self, _ns: u32) {}
}

fn spec(base: f64, noise: f64, seed: u64) -> SimSpec {
    SimSpec {
        seed,
        base,
        noise_stddev: noise,
        ..SimSpec::default()
    }
}

fn with(mut s: SimSpec, kind: AnomalyKind, start: u64, len: u64) -> SimSpec {
    s.anomalies
        .push(Anomaly {
            kind,
            start_sample: start,
            len_samples: len,
        })
        .unwrap();
    s
}

fn bme_bus(t: SimSpec, faults: Vec<BusFault>) -> SimBus {
    let bus = SimBus::new();
    bus.attach(
        0x76,
        Bme280Sim::new(t, spec(45.0, 0.5, 2), spec(1013.25, 0.1, 3)),
        faults,
    );
    bus
}

#[test]
fn the_real_bme280_driver_reads_back_the_simulated_values_to_its_resolution() {
    let t = spec(21.0, 0.3, 7);
    let bus = bme_bus(t.clone(), vec![]);
    let mut dev = Bme280::init(bus.clone(), 0x76).map_err(|e| e.1).unwrap();
    let mut want_t = SimSensor::new(t);
    let mut want_h = SimSensor::new(spec(45.0, 0.5, 2));
    let mut want_p = SimSensor::new(spec(1013.25, 0.1, 3));
    for _ in 0..50 {
        let m = dev.read().unwrap();
        let (wt, wh, wp) = (
            want_t.next_sample().unwrap(),
            want_h.next_sample().unwrap(),
            want_p.next_sample().unwrap(),
        );
        assert!(
            (m.temperature - wt).abs() < 0.005,
            "{} vs {wt}",
            m.temperature
        );
        assert!((m.humidity - wh).abs() < 0.01, "{} vs {wh}", m.humidity);
        assert!((m.pressure - wp).abs() < 0.01, "{} vs {wp}", m.pressure);
        bus.tick();
    }
}

#[test]
fn a_stuck_simulated_sensor_reads_bit_identical_values_through_the_driver() {
    let t = with(spec(21.0, 0.3, 7), AnomalyKind::Stuck, 5, 10);
    let bus = bme_bus(t, vec![]);
    let mut dev = Bme280::init(bus.clone(), 0x76).map_err(|e| e.1).unwrap();
    let mut temps = Vec::new();
    for _ in 0..20 {
        temps.push(dev.read().unwrap().temperature);
        bus.tick();
    }
    assert!(temps[5..15].iter().all(|&x| x == temps[4]));
    assert_ne!(temps[15], temps[4]);
    assert_ne!(temps[3], temps[4]);
}

#[test]
fn drift_and_a_spike_show_up_in_the_driver_readings() {
    let mut t = spec(20.0, 0.0, 1);
    t.drift_per_sample = 0.1;
    let t = with(t, AnomalyKind::Spike { magnitude: 30.0 }, 10, 1);
    let bus = bme_bus(t, vec![]);
    let mut dev = Bme280::init(bus.clone(), 0x76).map_err(|e| e.1).unwrap();
    let mut temps = Vec::new();
    for _ in 0..12 {
        temps.push(dev.read().unwrap().temperature);
        bus.tick();
    }
    assert!((temps[9] - 20.9).abs() < 0.01);
    assert!((temps[10] - 51.0).abs() < 0.01);
    assert!((temps[11] - 21.1).abs() < 0.01);
}

#[test]
fn a_device_that_disappears_is_absent_then_reads_again_when_it_comes_back() {
    let fault = BusFault {
        kind: FaultKind::Absent,
        start: 3,
        len: 4,
    };
    let bus = bme_bus(spec(21.0, 0.0, 1), vec![fault]);
    let mut dev = Bme280::init(bus.clone(), 0x76).map_err(|e| e.1).unwrap();
    let mut faults = Vec::new();
    for _ in 0..10 {
        faults.push(dev.read().err().map(|e| e.fault()));
        bus.tick();
    }
    let absent = Some(Fault::Absent);
    assert_eq!(
        faults,
        [
            None, None, None, absent, absent, absent, absent, None, None, None
        ]
    );
}

#[test]
fn bus_errors_and_data_nacks_are_glitches() {
    let faults = vec![
        BusFault {
            kind: FaultKind::BusError,
            start: 1,
            len: 1,
        },
        BusFault {
            kind: FaultKind::DataNack,
            start: 2,
            len: 1,
        },
    ];
    let bus = bme_bus(spec(21.0, 0.0, 1), faults);
    let mut dev = Bme280::init(bus.clone(), 0x76).map_err(|e| e.1).unwrap();
    bus.tick();
    assert_eq!(dev.read().unwrap_err().fault(), Fault::Glitch);
    bus.tick();
    assert_eq!(dev.read().unwrap_err().fault(), Fault::Glitch);
    bus.tick();
    assert!(dev.read().is_ok());
}

#[test]
fn the_real_sht3x_driver_reads_the_simulated_values() {
    let bus = SimBus::new();
    bus.attach(
        0x44,
        Sht3xSim::new(spec(23.5, 0.0, 1), spec(61.0, 0.0, 2)),
        vec![],
    );
    let mut dev = Sht3x::init(bus.clone(), NoDelay, 0x44)
        .map_err(|e| e.1)
        .unwrap();
    let m = dev.read().unwrap();
    assert!((m.temperature - 23.5).abs() < 0.003, "{}", m.temperature);
    assert!((m.humidity - 61.0).abs() < 0.002, "{}", m.humidity);
}

#[test]
fn an_sht3x_read_without_a_measurement_command_is_nacked() {
    let mut bus = SimBus::new();
    bus.attach(
        0x44,
        Sht3xSim::new(spec(1.0, 0.0, 1), spec(1.0, 0.0, 1)),
        vec![],
    );
    assert!(bus.read(0x44, &mut [0u8; 6]).is_err());
}

#[test]
fn the_real_ads1115_driver_reads_each_simulated_input() {
    let bus = SimBus::new();
    bus.attach(
        0x48,
        Ads1115Sim::new([
            spec(0.5, 0.0, 1),
            spec(1.25, 0.0, 2),
            spec(-0.1, 0.0, 3),
            spec(3.0, 0.0, 4),
        ]),
        vec![],
    );
    let mut adc = Ads1115::init(bus.clone(), NoDelay, 0x48)
        .map_err(|e| e.1)
        .unwrap();
    let lsb = 4.096 / 32768.0;
    for (ch, want) in [(0, 0.5), (1, 1.25), (2, -0.1), (3, 3.0)] {
        let v = adc.read(ch, Gain::Fs4V096).unwrap();
        assert!((v - want).abs() <= lsb, "ch{ch}: {v}");
    }
    // Beyond the full scale it saturates, as the chip does.
    assert!((adc.read(3, Gain::Fs1V024).unwrap() - 1.024).abs() <= 1e-3);
}

#[test]
fn a_scan_finds_and_names_every_simulated_chip_and_nothing_else() {
    let mut bus = bme_bus(spec(21.0, 0.0, 1), vec![]);
    bus.attach(
        0x44,
        Sht3xSim::new(spec(1.0, 0.0, 1), spec(1.0, 0.0, 1)),
        vec![],
    );
    bus.attach(
        0x49,
        Ads1115Sim::new(core::array::from_fn(|_| spec(0.0, 0.0, 1))),
        vec![],
    );
    let mut found = Vec::new();
    scan::scan(&mut bus, |a, c| found.push((a, c)));
    assert_eq!(
        found,
        [
            (0x44, Some(Chip::Sht3x)),
            (0x49, Some(Chip::Ads1x15)),
            (0x76, Some(Chip::Bme280)),
        ]
    );
}

#[test]
fn the_register_file_auto_increments_like_i2c_stub() {
    let mut r = Registers::default();
    r.write(&[0x10, 1, 2, 3]);
    r.write(&[0x11]);
    let mut b = [0u8; 3];
    r.read(&mut b);
    assert_eq!(b, [2, 3, 0]);
}
