//! The `weir` binary: parse the command line, dispatch, exit with its code.

use std::process::ExitCode;

use clap::Parser;
use weir::cli::{Cli, Command, ConfigCommand, OutboxCommand, SensorsCommand};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Run { config, log } => weir::cli::run::run(&config, &log),
        Command::Config(ConfigCommand::Check { file }) => {
            weir::cli::config::check(&file, &mut std::io::stdout(), &mut std::io::stderr())
        }
        Command::Config(ConfigCommand::Example) => {
            weir::cli::config::example(&mut std::io::stdout(), &mut std::io::stderr())
        }
        Command::Backtest {
            config,
            input,
            format,
            flush,
            no_scores,
            min_score,
            labels,
            label_column,
            ts_unit,
        } => weir::cli::backtest::backtest(
            &weir::cli::backtest::Options {
                config: &config,
                input: &input,
                format,
                flush,
                no_scores,
                min_score,
                labels: labels.as_deref(),
                label_column: label_column.as_deref(),
                ts_unit,
            },
            &mut std::io::stdout().lock(),
            &mut std::io::stderr(),
        ),
        Command::Sensors {
            config,
            json,
            command,
        } => sensors(&config, json, command),
        Command::Status {
            config,
            json,
            upstream_down_after,
            ingest_down_after,
            backlog_age,
        } => weir::cli::status::status(
            weir::cli::status::Opts {
                config: &config,
                json,
                limits: weir::control::health::Limits {
                    upstream_down: upstream_down_after,
                    ingest_down: ingest_down_after,
                    backlog_age,
                },
            },
            &mut std::io::stdout().lock(),
            &mut std::io::stderr(),
        ),
        Command::Tail {
            config,
            kinds,
            sensor,
            json,
        } => weir::cli::tail::tail(
            weir::cli::tail::Opts {
                config: &config,
                kinds,
                sensor,
                json,
            },
            &mut std::io::stdout().lock(),
            &mut std::io::stderr(),
        ),
        Command::Top {
            config,
            interval,
            once,
        } => weir::cli::top::top(
            weir::cli::top::Opts {
                config: &config,
                interval,
                once,
            },
            &mut std::io::stdout().lock(),
            &mut std::io::stderr(),
        ),
        Command::Metrics { config } => {
            weir::cli::status::metrics(&config, &mut std::io::stdout(), &mut std::io::stderr())
        }
        Command::LogLevel {
            config,
            filter,
            allow_silence,
        } => weir::cli::status::log_level(
            &config,
            filter.as_deref(),
            allow_silence,
            &mut std::io::stdout(),
            &mut std::io::stderr(),
        ),
        Command::Decode { file } => weir::cli::decode::decode(
            file.as_deref(),
            &mut std::io::stdout().lock(),
            &mut std::io::stderr(),
        ),
        Command::Outbox {
            config,
            db,
            json,
            command,
        } => outbox(
            &weir::cli::outbox::Target {
                config: &config,
                db: db.as_deref(),
                json,
            },
            command,
        ),
        Command::Diag(args) => {
            weir::cli::diag::diag(&args, &mut std::io::stdout(), &mut std::io::stderr())
        }
    };
    ExitCode::from(code)
}

fn sensors(config: &std::path::Path, json: bool, command: SensorsCommand) -> u8 {
    use weir::cli::sensors;
    let o = sensors::Opts { json };
    let (out, err) = (&mut std::io::stdout(), &mut std::io::stderr());
    match command {
        SensorsCommand::List => sensors::list(config, o, out, err),
        SensorsCommand::Scan { bus } => sensors::scan_cmd(config, bus.as_deref(), o, out, err),
        SensorsCommand::Read {
            name,
            count,
            timeout,
        } => sensors::read(config, &name, count, timeout, o, out, err),
    }
}

fn outbox(t: &weir::cli::outbox::Target<'_>, command: OutboxCommand) -> u8 {
    use weir::cli::outbox;
    let (out, err) = (&mut std::io::stdout().lock(), &mut std::io::stderr());
    match command {
        OutboxCommand::Verify => outbox::verify(t, out, err),
        OutboxCommand::Stats { top } => outbox::stats(t, top, out, err),
        OutboxCommand::Peek { n, class } => outbox::peek(t, n, class, out, err),
        OutboxCommand::Export { class, output } => {
            outbox::export(t, class, output.as_deref(), out, err)
        }
        OutboxCommand::Purge {
            older_than,
            class,
            yes,
        } => outbox::purge(
            t,
            outbox::PurgeArgs {
                older_than,
                class,
                yes,
            },
            &mut std::io::stdin().lock(),
            out,
            err,
        ),
    }
}
