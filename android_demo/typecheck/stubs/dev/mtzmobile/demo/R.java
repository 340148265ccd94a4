package dev.mtzmobile.demo;
public final class R {
    public static final class layout { public static final int activity_main = 1; }
    public static final class id { public static final int status = 1, task_spinner = 2, sample_image = 3, result = 4, benchmark_result = 5, next_sample = 6, run_joint = 7, benchmark = 8, reload = 9; }
    public static final class string { public static final int loading = 1, benchmark_running = 2; }
}
