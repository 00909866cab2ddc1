use embedded_hal::i2c::{ErrorKind, NoAcknowledgeSource};
use embedded_hal_mock::eh1::i2c::{Mock, Transaction as T};

use super::*;
use crate::error::Fault;

const A: u8 = ADDRESS;

fn init_script() -> Vec<T> {
    let (a, b) = Calibration::EXAMPLE.to_registers();
    vec![
        T::write_read(A, vec![reg::ID], vec![CHIP_ID]),
        T::write_read(A, vec![reg::CALIB_00], a.to_vec()),
        T::write_read(A, vec![reg::CALIB_26], b.to_vec()),
        T::write(A, vec![reg::CTRL_HUM, 0x01]),
        T::write(A, vec![reg::CONFIG, 0x40]),
        T::write(A, vec![reg::CTRL_MEAS, 0x27]),
    ]
}

#[test]
fn bosch_reference_values_compensate_to_25_08_c_and_1006_53_hpa() {
    let c = Calibration::EXAMPLE;
    let (t, t_fine) = compensate_temperature(&c, 519_888);
    assert!((t - 25.08).abs() < 0.01, "{t}");
    assert!((t_fine - 128_422.0).abs() < 1.0, "{t_fine}");
    let p = compensate_pressure(&c, 415_148, t_fine);
    assert!((p - 100_653.27).abs() < 0.1, "{p}");
}

#[test]
fn calibration_registers_round_trip_including_the_split_nibbles() {
    let c = Calibration {
        h4: -1234,
        h5: 1001,
        h6: -5,
        ..Calibration::EXAMPLE
    };
    let (a, b) = c.to_registers();
    assert_eq!(Calibration::from_registers(&a, &b), c);
}

#[test]
fn raw_registers_round_trip() {
    let raw = Raw {
        pressure: 0xABCDE,
        temperature: 0x7EF01,
        humidity: 0x6C2A,
    };
    assert_eq!(Raw::from_registers(&raw.to_registers()), raw);
}

#[test]
fn init_checks_the_id_reads_calibration_and_starts_normal_mode_then_a_read_is_one_burst() {
    let mut script = init_script();
    let raw = Raw {
        pressure: 415_148,
        temperature: 519_888,
        humidity: 30_000,
    };
    script.push(T::write_read(
        A,
        vec![reg::DATA],
        raw.to_registers().to_vec(),
    ));
    let mut bus = Mock::new(&script);
    let mut dev = Bme280::init(bus.clone(), A).map_err(|e| e.1).unwrap();
    assert_eq!(dev.calibration(), &Calibration::EXAMPLE);
    let m = dev.read().unwrap();
    assert!((m.temperature - 25.08).abs() < 0.01);
    assert!((m.pressure - 1006.53).abs() < 0.01);
    assert!((0.0..=100.0).contains(&m.humidity));
    bus.done();
}

#[test]
fn a_bmp280_is_refused_as_the_wrong_chip() {
    let mut bus = Mock::new(&[T::write_read(A, vec![reg::ID], vec![BMP280_CHIP_ID])]);
    let (_, e) = Bme280::init(bus.clone(), A).unwrap_err();
    assert_eq!(
        e,
        Error::WrongChip {
            expected: "bme280",
            found: 0x58
        }
    );
    assert_eq!(e.fault(), Fault::Misconfigured);
    bus.done();
}

#[test]
fn a_chip_that_does_not_acknowledge_its_address_is_absent() {
    let mut bus = Mock::new(&[T::write_read(A, vec![reg::ID], vec![0])
        .with_error(ErrorKind::NoAcknowledge(NoAcknowledgeSource::Address))]);
    let (_, e) = Bme280::init(bus.clone(), A).unwrap_err();
    assert_eq!(e.fault(), Fault::Absent);
    bus.done();
}

#[test]
fn a_bus_error_during_a_read_is_a_glitch_and_the_next_read_works() {
    let mut script = init_script();
    let good = Raw {
        pressure: 415_148,
        temperature: 519_888,
        humidity: 30_000,
    }
    .to_registers()
    .to_vec();
    script.push(T::write_read(A, vec![reg::DATA], good.clone()).with_error(ErrorKind::Bus));
    script.push(T::write_read(A, vec![reg::DATA], good));
    let mut bus = Mock::new(&script);
    let mut dev = Bme280::init(bus.clone(), A).map_err(|e| e.1).unwrap();
    let e = dev.read().unwrap_err();
    assert_eq!(e, Error::Bus(ErrorKind::Bus));
    assert_eq!(e.fault(), Fault::Glitch);
    assert!(dev.read().is_ok());
    bus.done();
}

#[test]
fn data_registers_at_their_reset_value_are_not_ready() {
    let mut script = init_script();
    script.push(T::write_read(
        A,
        vec![reg::DATA],
        vec![0x80, 0, 0, 0x80, 0, 0, 0x80, 0],
    ));
    let mut bus = Mock::new(&script);
    let mut dev = Bme280::init(bus.clone(), A).map_err(|e| e.1).unwrap();
    assert_eq!(dev.read().unwrap_err(), Error::NotReady);
    bus.done();
}

#[test]
fn humidity_is_clamped_to_0_and_100() {
    let c = Calibration::EXAMPLE;
    let (_, t_fine) = compensate_temperature(&c, 519_888);
    assert_eq!(compensate_humidity(&c, 0, t_fine), 0.0);
    assert_eq!(compensate_humidity(&c, u16::MAX, t_fine), 100.0);
}
