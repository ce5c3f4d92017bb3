//! Each manager's personal plan: what the leads he received usually bring, against what he
//! closed. From the seed interview: "Вася получил 40 лидов, которые по прошлому году в
//! среднем закрывались на миллион… твой план — миллион".

use std::collections::HashMap;

use crate::domain::ledger::LedgerRow;

/// A plan and its fact over some leads.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PlanFact {
    /// Leads received.
    pub leads: u64,
    /// The plan: the sum of the leads' forecast profit, in roubles.
    pub plan: f64,
    /// The fact: the profit of the won ones, in roubles.
    pub fact: f64,
}

impl PlanFact {
    /// The fact as a percentage of the plan; `None` without a plan.
    pub fn percent(&self) -> Option<f64> {
        super::percent(self.fact, self.plan)
    }

    fn add(&mut self, row: &LedgerRow) {
        self.leads += 1;
        self.plan += row.scored.forecast_profit;
        self.fact += super::won_profit(row);
    }
}

/// One manager's line of the plans.
#[derive(Debug, Clone, PartialEq)]
pub struct ManagerPlan {
    /// The manager's CRM user id; `None` for the leads nobody is responsible for.
    pub manager_id: Option<String>,
    /// The manager's plan and fact.
    pub figures: PlanFact,
}

/// The month's plans: one line per manager, the biggest plan first, and the department's
/// total.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plans {
    /// The managers, by plan, descending.
    pub managers: Vec<ManagerPlan>,
    /// Every lead of the month together.
    pub total: PlanFact,
}

/// Each manager's plan and fact over the given rows (one month's).
pub fn plans(rows: &[LedgerRow]) -> Plans {
    let mut by_manager: HashMap<Option<&str>, PlanFact> = HashMap::new();
    let mut total = PlanFact::default();
    for row in rows {
        // A blank id from the CRM means nobody, as a missing one does.
        let manager = row
            .scored
            .manager_id
            .as_deref()
            .filter(|id| !id.trim().is_empty());
        by_manager.entry(manager).or_default().add(row);
        total.add(row);
    }
    let mut managers: Vec<ManagerPlan> = by_manager
        .into_iter()
        .map(|(manager, figures)| ManagerPlan {
            manager_id: manager.map(str::to_owned),
            figures,
        })
        .collect();
    managers.sort_by(|a, b| {
        b.figures
            .plan
            .total_cmp(&a.figures.plan)
            .then_with(|| super::none_last(&a.manager_id, &b.manager_id))
    });
    Plans { managers, total }
}

#[cfg(test)]
mod tests {
    use super::super::sample::{Sample, lead};
    use super::*;

    #[test]
    fn each_manager_gets_the_forecast_of_his_leads_as_his_plan() {
        let rows = [
            lead("1", 400_000.0).manager("vasya").won(500_000.0),
            lead("2", 600_000.0).manager("vasya").lost(),
            lead("3", 300_000.0).manager("petya").won(330_000.0),
            lead("4", 50_000.0),
            lead("5", 200_000.0).manager("petya"),
        ];
        let p = plans(&rows);
        let names: Vec<_> = p.managers.iter().map(|m| m.manager_id.as_deref()).collect();
        assert_eq!(names, [Some("vasya"), Some("petya"), None]);
        let vasya = &p.managers[0].figures;
        assert_eq!(
            (vasya.leads, vasya.plan, vasya.fact),
            (2, 1_000_000.0, 500_000.0)
        );
        assert_eq!(vasya.percent(), Some(50.0));
        let petya = &p.managers[1].figures;
        assert_eq!(
            (petya.leads, petya.plan, petya.fact),
            (2, 500_000.0, 330_000.0)
        );
        let nobody = &p.managers[2].figures;
        assert_eq!((nobody.leads, nobody.plan, nobody.fact), (1, 50_000.0, 0.0));
        assert_eq!(
            p.total,
            PlanFact {
                leads: 5,
                plan: 1_550_000.0,
                fact: 830_000.0
            }
        );
    }

    #[test]
    fn equal_plans_go_by_id_and_nobody_last() {
        let rows = [
            lead("1", 50.0),
            lead("2", 100.0).manager("b"),
            lead("3", 100.0).manager("a"),
            lead("4", 50.0).manager(" "),
        ];
        let p = plans(&rows);
        let names: Vec<_> = p.managers.iter().map(|m| m.manager_id.as_deref()).collect();
        assert_eq!(names, [Some("a"), Some("b"), None]);
        assert_eq!(p.managers[2].figures.leads, 2, "a blank id is nobody");
    }

    #[test]
    fn an_empty_month_has_no_managers_and_no_percentage() {
        let p = plans(&[]);
        assert!(p.managers.is_empty());
        assert_eq!(p.total.percent(), None);
    }
}
