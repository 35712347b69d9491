//! The operator's commands: migrating instances to a newer version by a plan file, and
//! repairing one instance (suspend, resume, move its work, withdraw a task). Argument
//! handling and printing only; the rules (who may, what is safe) are the engine's.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{anyhow, bail};
use sopflow::engine::decide::Command as EngineCommand;
use sopflow::engine::migrate::MigrationPlan;

use super::work;

#[derive(clap::Subcommand, Debug)]
pub enum Repair {
    /// Move running instances to a newer version by a plan file (TOML: name, procedure,
    /// from_version, to_version, [steps] old = "new", recompute_deadlines, reason). Without
    /// --apply it only says what would happen to each instance.
    Migrate {
        plan: PathBuf,
        #[arg(long = "as")]
        user: String,
        /// Migrate the instances that can move (each in its own commit).
        #[arg(long)]
        apply: bool,
        #[command(flatten)]
        places: work::Places,
    },
    /// Suspend an instance: no commands until resumed; deadlines paused.
    Suspend {
        instance: uuid::Uuid,
        #[arg(long = "as")]
        user: String,
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        places: work::Places,
    },
    /// Resume a suspended instance; due times move on by the time it was suspended.
    Resume {
        instance: uuid::Uuid,
        #[arg(long = "as")]
        user: String,
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        places: work::Places,
    },
    /// Move an instance's work to another step (all open work, or the tasks named).
    Move {
        instance: uuid::Uuid,
        #[arg(long)]
        to: String,
        #[arg(long = "task")]
        tasks: Vec<uuid::Uuid>,
        #[arg(long = "as")]
        user: String,
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        places: work::Places,
    },
    /// Withdraw one open task without it being done.
    Withdraw {
        task: uuid::Uuid,
        #[arg(long = "as")]
        user: String,
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        places: work::Places,
    },
}

/// Reads a plan file, refusing unknown keys with the file's name in the message.
pub fn read_plan(path: &PathBuf) -> anyhow::Result<MigrationPlan> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow!("cannot read the plan {}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| anyhow!("the plan {} is not valid: {e}", path.display()))
}

pub async fn run(r: Repair) -> anyhow::Result<ExitCode> {
    let (places, user, cmd, instance) = match r {
        Repair::Migrate {
            plan,
            user,
            apply,
            places,
        } => {
            let plan = read_plan(&plan)?;
            let s = work::Session::open(&places).await?;
            let who = s.actor(&user)?;
            let outcomes = s
                .engine
                .migrate(&plan, &who, apply)
                .await
                .map_err(work::explain)?;
            let mut refused = 0;
            for o in &outcomes {
                refused += usize::from(o.result == "refused");
                println!("{}  {:<9} {}", o.instance, o.result, o.detail);
            }
            println!(
                "{} instance(s): {} {}, {refused} refused",
                outcomes.len(),
                outcomes.len() - refused,
                if apply { "migrated" } else { "would migrate" }
            );
            return Ok(if refused > 0 {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            });
        }
        Repair::Suspend {
            instance,
            user,
            reason,
            places,
        } => (
            places,
            user,
            EngineCommand::Suspend { reason },
            Some(instance),
        ),
        Repair::Resume {
            instance,
            user,
            reason,
            places,
        } => (
            places,
            user,
            EngineCommand::Resume { reason },
            Some(instance),
        ),
        Repair::Move {
            instance,
            to,
            tasks,
            user,
            reason,
            places,
        } => (
            places,
            user,
            EngineCommand::Move { tasks, to, reason },
            Some(instance),
        ),
        Repair::Withdraw {
            task,
            user,
            reason,
            places,
        } => (
            places,
            user,
            EngineCommand::WithdrawTask { task, reason },
            None,
        ),
    };
    let s = work::Session::open(&places).await?;
    let who = s.actor(&user)?;
    let instance = match (instance, &cmd) {
        (Some(i), _) => i,
        (None, EngineCommand::WithdrawTask { task, .. }) => s.instance_of_task(*task)?.id,
        (None, _) => bail!("no instance given"),
    };
    let after = s
        .engine
        .execute(instance, cmd, Some(&who))
        .await
        .map_err(work::explain)?;
    work::print_instance(&after);
    Ok(ExitCode::SUCCESS)
}
