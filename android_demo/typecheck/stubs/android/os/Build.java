package android.os;
public class Build {
    public static final String ID = null, SOC_MANUFACTURER = null, SOC_MODEL = null;
    public static class VERSION { public static final int SDK_INT = 0; }
    public static class VERSION_CODES { public static final int S = 31; }
}
