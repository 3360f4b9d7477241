// SPDX-License-Identifier: GPL-2.0
/*
 * ncu_crash: the crash lab's ways to bring a kernel down that sysrq 'c' does not
 * cover (the Debian cloud kernel has no lkdtm). Loading it does it, in the process
 * context of insmod:
 *
 *   insmod ncu_crash.ko what=null    an oops: a write through a NULL pointer
 *                                    (a panic with kernel.panic_on_oops=1)
 *   insmod ncu_crash.ko what=lockup  a soft lockup: spins with preemption off
 *                                    (a panic with kernel.softlockup_panic=1)
 *   insmod ncu_crash.ko what=hung    a hung task: sleeps uninterruptibly, for ever
 *                                    (a panic with kernel.hung_task_panic=1)
 *
 * Any other value, or none, loads nothing and says why.
 */
#include <linux/module.h>
#include <linux/kernel.h>
#include <linux/sched.h>
#include <linux/preempt.h>
#include <linux/string.h>

static char *what = "";
module_param(what, charp, 0);
MODULE_PARM_DESC(what, "null, lockup or hung");

static int __init ncu_crash_init(void)
{
	if (!strcmp(what, "null")) {
		int *volatile p = NULL;

		pr_emerg("ncu_crash: writing through a NULL pointer in %s\n", current->comm);
		*p = 1;
	} else if (!strcmp(what, "lockup")) {
		pr_emerg("ncu_crash: spinning with preemption off in %s\n", current->comm);
		preempt_disable();
		for (;;)
			cpu_relax();
	} else if (!strcmp(what, "hung")) {
		pr_emerg("ncu_crash: sleeping uninterruptibly for ever in %s\n", current->comm);
		for (;;) {
			set_current_state(TASK_UNINTERRUPTIBLE);
			schedule();
		}
	}
	pr_err("ncu_crash: what=%s: want null, lockup or hung\n", what);
	return -EINVAL;
}

module_init(ncu_crash_init);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("crash-lab crashes: NULL dereference, soft lockup, hung task");
