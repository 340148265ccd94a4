package android.view;
public class View {
    public interface OnClickListener { void onClick(View v); }
    public void setOnClickListener(OnClickListener l) {}
    public boolean isEnabled() { return true; }
    public void setEnabled(boolean enabled) {}
}
