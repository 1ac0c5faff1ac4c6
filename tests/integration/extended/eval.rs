//! `cbr eval` on CUB birds (10 classes, 543 photos).

use crate::common::dataset;
use crate::eval::eval_json_report_and_dump;

#[test]
#[ignore = "extended tier: needs ../shared (scripts/test.sh runs it when ../shared/datasets exists)"]
fn eval_json_report_and_dump_on_cub() {
    eval_json_report_and_dump(&dataset("cub200_010"), 543, (0.60, 0.75), "0.672 over 5 seeds");
}
